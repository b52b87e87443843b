"""Which tf.distribute strategy a run uses, and building it.

`choose` is a pure function of what the run was given (a requested name, a TPU
name or address, the TF_CONFIG environment variable and the number of GPUs), so
the rule is testable without devices; `create` builds the strategy for a name.

The rule for "auto" (the default):
  a TPU name or address        -> "tpu"  (TPUClusterResolver + TPUStrategy)
  TF_CONFIG with worker/chief  -> "multi_worker_mirrored"
  more than one GPU            -> "mirrored"
  otherwise                    -> "default" (one device, no distribution)
Any other name forces that strategy, e.g. "mirrored" over logical CPUs in tests,
unless it contradicts the environment: a TPU given to a non-TPU strategy, or a
TF_CONFIG cluster of several tasks given to a single-worker strategy (each
worker would train alone and all would write the same model_dir).
"""

import json
import os
from typing import Optional, Tuple

from absl import logging
import tensorflow as tf

from official.common import distribute_utils

AUTO = "auto"
STRATEGIES = (AUTO, "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
_WORKER_TASKS = ("chief", "worker")
_SINGLE_WORKER = ("default", "one_device", "mirrored")


def cluster_from_tf_config(tf_config: Optional[str]) -> dict:
  """The `cluster` of a TF_CONFIG JSON string ({} when unset); ValueError if malformed."""
  if not tf_config:
    return {}
  try:
    config = json.loads(tf_config)
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {tf_config!r}") from None
  cluster = config.get("cluster", {}) if isinstance(config, dict) else None
  if not isinstance(cluster, dict):
    raise ValueError(f"TF_CONFIG must be a JSON object with a 'cluster' object: {tf_config!r}")
  unsupported = sorted(set(cluster) - set(_WORKER_TASKS))
  if unsupported:
    raise ValueError(
        f"TF_CONFIG cluster has task types {unsupported}; only {list(_WORKER_TASKS)} "
        "(MultiWorkerMirroredStrategy) are supported")
  return cluster


def choose(requested: str = AUTO, tpu: Optional[str] = None,
           tf_config: Optional[str] = None, num_gpus: int = 0) -> str:
  """The strategy name for a run (see the module docstring for the "auto" rule)."""
  if requested not in STRATEGIES:
    raise ValueError(f"distribution strategy must be one of {STRATEGIES}, got {requested!r}")
  cluster = cluster_from_tf_config(tf_config)
  if requested == "tpu" and tpu is None:
    raise ValueError('distribution strategy "tpu" needs --tpu=NAME_OR_ADDRESS '
                     '("local" on a TPU VM)')
  if requested == "multi_worker_mirrored" and not cluster:
    raise ValueError('distribution strategy "multi_worker_mirrored" needs TF_CONFIG '
                     "with a cluster of workers")
  if tpu and requested not in (AUTO, "tpu"):
    raise ValueError(f"--tpu={tpu} is given but the distribution strategy is "
                     f"{requested!r}; use 'tpu' or 'auto'")
  tasks = sum(len(addresses) for addresses in cluster.values())
  if tasks > 1 and requested in _SINGLE_WORKER:
    raise ValueError(f"TF_CONFIG has a cluster of {tasks} tasks but the distribution "
                     f"strategy {requested!r} trains on one worker; use "
                     "'multi_worker_mirrored' or 'auto'")
  if requested != AUTO:
    return requested
  if tpu:
    return "tpu"
  if cluster:
    return "multi_worker_mirrored"
  if num_gpus > 1:
    return "mirrored"
  return "default"


def create(name: str, tpu: Optional[str] = None) -> tf.distribute.Strategy:
  """Builds the strategy `name` (one of STRATEGIES except "auto").

  "mirrored" spans every GPU, or every logical CPU when there is no GPU (how the
  tests run it on one machine); "tpu" connects to `tpu` unless it is "local"
  (the TPU VM the process runs on) and initializes the TPU system.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    return tf.distribute.TPUStrategy(distribute_utils.tpu_initialize(tpu))
  raise ValueError(f"cannot create distribution strategy {name!r}; one of {STRATEGIES[1:]}")


def resolve(requested: str = AUTO, tpu: Optional[str] = None
            ) -> Tuple[str, tf.distribute.Strategy]:
  """(name, strategy) for this process: `choose` on the environment, then `create`."""
  name = choose(requested, tpu, os.environ.get("TF_CONFIG"),
                len(tf.config.list_physical_devices("GPU")))
  strategy = create(name, tpu)
  logging.info("Distribution strategy: %s (%s, %d replicas)", name,
               type(strategy).__name__, strategy.num_replicas_in_sync)
  return name, strategy
