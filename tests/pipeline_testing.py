"""Helpers of the pipeline tests: tiny ViT runs of pipelines.train (in this
process or as subprocesses), what their checkpoints and summaries hold, and
nested --params_override dicts."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from pipelines import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = "mnemosyne/vit_finetuning"
TINY_CONFIG = os.path.join(ROOT, "configs", "experiments", "vit_finetuning_tiny.yaml")

# A one-layer ViT (hidden 16, 24 variables) checkpointing often: the smallest
# that learns the digits.
TINY = {
    "task.model.backbone.transformer.num_layers": 1,
    "task.model.backbone.hidden_size": 16,
    "task.model.backbone.transformer.mlp_dim": 32,
    "task.train_data.global_batch_size": 32,
    "trainer.steps_per_loop": 5,
    "trainer.summary_interval": 5,
    "trainer.checkpoint_interval": 5,
    "trainer.validation_interval": 1000,
}
# No transformer block (patch embedding, class token, position embedding, final
# norm and head: 8 variables, so Mnemosyne compiles in seconds, not ~20 s): for
# tests of the driver, strategies and checkpoints, where depth does not matter.
NO_BLOCKS = dict(TINY, **{"task.model.backbone.transformer.num_layers": 0})
ADAM = {"trainer.optimizer_config.optimizer.type": "adam",
        "trainer.optimizer_config.learning_rate.constant.learning_rate": 3e-3}


def overrides(*dicts, **extra) -> str:
  """`--params_override` text "a.b=1,c=2" of the merged dicts and keywords."""
  merged = {}
  for d in dicts + (extra,):
    merged.update(d)
  return ",".join(f"{k}={v}" for k, v in merged.items())


def nested(base: dict, dotted: dict) -> dict:
  """`base` (nested dicts, copied) with each "a.b.c": value of `dotted` set."""
  merged = json.loads(json.dumps(base))
  for path, value in dotted.items():
    node = merged
    *parents, leaf = path.split(".")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return merged


def run(model_dir: str, mode: str, *dicts, **extra):
  """A tiny ViT run of pipelines.train in this process (the tiny config, then
  the merged override dicts); returns (strategy name, model)."""
  params, name, strategy, task = train.prepare(
      EXPERIMENT, mode, model_dir, [TINY_CONFIG], overrides(*dicts, **extra))
  model, _ = train.run(params, strategy, task, mode, model_dir)
  return name, model


def train_argv(model_dir: str, params_override: str, mode: str = "train"):
  """The pipelines.train command of a tiny run."""
  return [sys.executable, "-m", "pipelines.train", f"--experiment={EXPERIMENT}",
          f"--mode={mode}", f"--model_dir={model_dir}", f"--config_file={TINY_CONFIG}",
          f"--params_override={params_override}"]


def start(argv, log_path: str, tf_config: str = None) -> subprocess.Popen:
  """Starts `argv` from the repository root, output to log_path."""
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("TF_CONFIG", None)
  if tf_config:
    env["TF_CONFIG"] = tf_config
  with open(log_path, "w") as log:
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def checkpoint_values(prefix: str, include_optimizer: bool = True):
  """{name: array} of a checkpoint: model, backbone, global step (and optimizer),
  without `save_counter` (which counts saves, not training)."""
  reader = tf.train.load_checkpoint(prefix)
  kept = ("model/", "backbone/", "global_step") + (("optimizer/",) if include_optimizer else ())
  return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)
          if name.startswith(kept)}


def max_difference(a: dict, b: dict) -> float:
  """Largest absolute difference between two checkpoints with the same names."""
  if sorted(a) != sorted(b):
    raise AssertionError(f"different variables: {sorted(set(a) ^ set(b))}")
  return max(float(np.max(np.abs(np.asarray(a[n], np.float64) - np.asarray(b[n], np.float64))))
             for n in a)


def step_of(prefix: str) -> int:
  """The global step a checkpoint was saved at."""
  return int(tf.train.load_checkpoint(prefix).get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE"))


def event_files(log_dir: str):
  """The summary files of `log_dir`, oldest first."""
  return sorted(tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*")))


def logged_steps(paths, tag: str = "training_loss"):
  """The steps at which `tag` was written to the summary files `paths`, every
  event in file order (a step written twice appears twice)."""
  return [event.step for path in paths for event in tf.compat.v1.train.summary_iterator(path)
          for value in event.summary.value if value.tag == tag]
