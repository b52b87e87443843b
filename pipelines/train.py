"""Trains and evaluates a pipeline experiment (the driver of every pipeline).

    python -m pipelines.train --experiment=mnemosyne/vit_finetuning \
        --mode=train_and_eval --model_dir=runs/vit \
        [--config_file=configs/experiments/vit_finetuning_tiny.yaml ...] \
        [--params_override=trainer.train_steps=100] [--tpu=NAME_OR_ADDRESS]

In the style of official's train drivers, and thin: the experiment config is
official's (registered by name, overridden by YAML files then by
--params_override), the strategy comes from `tpu.strategy` (runtime.
distribution_strategy, "auto" by default, and --tpu), and official's trainer
runs the task through `tpu.preemption`'s runner. The whole configuration is
parsed and checked (experiment name, files, keys, values, paths, the optimizer)
before anything is written to model_dir. Running the same command again after a
crash or preemption resumes from the latest checkpoint in model_dir, at the
step and input position where it was saved.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from official.core import exp_factory
from official.core import task_factory
from official.core import train_utils
from official.modeling import hyperparams
from official.modeling import optimization
from official.modeling import performance

from pipelines import registry  # noqa: F401  (registers the experiments)
from tpu import preemption
from tpu import strategy as strategy_lib

MODES = ("train", "eval", "train_and_eval")

flags.DEFINE_string("experiment", None, "A registered experiment, e.g. mnemosyne/vit_finetuning.")
flags.DEFINE_enum("mode", None, MODES, "What to run.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and params.yaml go here "
                    "(a local path or a gs:// path).")
flags.DEFINE_multi_string("config_file", None, "YAML files overriding the experiment's "
                          "defaults, applied in order.")
flags.DEFINE_string("params_override", None, "YAML/JSON string or 'a.b=1,c=2' overriding "
                    "the config after the config files.")
flags.DEFINE_string("tpu", None, "Cloud TPU name or grpc:// address ('local' on a TPU VM); "
                    "selects TPUStrategy.")

FLAGS = flags.FLAGS


def registered_experiments():
  """Names registered with official's exp_factory (sorted)."""
  names = []

  def walk(collection, prefix):
    for key, value in collection.items():
      if isinstance(value, dict):
        walk(value, prefix + key + "/")
      else:
        names.append(prefix + key)

  walk(exp_factory._REGISTERED_CONFIGS, "")  # pylint: disable=protected-access
  return sorted(names)


def parse_config(experiment, config_files=None, params_override=None, tpu=None):
  """The experiment config after YAML files, then overrides (a string or a list
  of strings applied in order); ValueError naming any unknown experiment,
  missing file or bad key."""
  if not experiment:
    raise ValueError("--experiment is required")
  if experiment not in registered_experiments():
    raise ValueError(f"unknown experiment {experiment!r}; registered: "
                     f"{registered_experiments()}")
  for path in config_files or []:
    if not tf.io.gfile.exists(path):
      raise ValueError(f"config file not found: {path}")
  overrides = [params_override] if isinstance(params_override, str) else params_override
  options = train_utils.ParseConfigOptions(
      experiment=experiment, config_file=list(config_files or []), tpu=tpu)
  try:
    params = train_utils.ExperimentParser(options).parse()
    for override in overrides or []:
      params = hyperparams.override_params_dict(params, override, is_strict=True)
    params.validate()
  except (KeyError, ValueError, TypeError, AttributeError) as e:
    raise ValueError(f"invalid configuration for {experiment} (config files "
                     f"{list(config_files or [])}, params_override "
                     f"{params_override!r}): {e}") from None
  params.lock()
  return params


def check_run(params, mode: str, model_dir: str) -> None:
  """ValueError naming what makes this run impossible, before anything is written."""
  if mode not in MODES:
    raise ValueError(f"--mode must be one of {MODES}, got {mode!r}")
  if not model_dir:
    raise ValueError("--model_dir is required")
  if tf.io.gfile.exists(model_dir) and not tf.io.gfile.isdir(model_dir):
    raise ValueError(f"--model_dir {model_dir} exists and is not a directory")
  if mode == "eval" and not (tf.io.gfile.isdir(model_dir)
                             and tf.train.latest_checkpoint(model_dir)):
    raise ValueError(f"--mode=eval: no checkpoint to evaluate in {model_dir}")
  if "train" in mode and params.trainer.train_steps < 1:
    raise ValueError(f"trainer.train_steps must be positive, got {params.trainer.train_steps}")
  if "eval" in mode and params.trainer.validation_steps == 0:
    raise ValueError("trainer.validation_steps is 0: nothing to evaluate (-1: the whole set)")
  strategy_lib.choose(params.runtime.distribution_strategy, params.runtime.tpu,
                      os.environ.get("TF_CONFIG"))


def check_optimizer(params) -> None:
  """ValueError if official's factory cannot build the configured optimizer (a
  Mnemosyne optimizer checks its weights file). Builds one: TensorFlow starts, so
  this comes after the strategy (MultiWorkerMirroredStrategy must come first)."""
  factory = optimization.OptimizerFactory(params.trainer.optimizer_config)
  try:
    factory.build_optimizer(factory.build_learning_rate())
  except (KeyError, ValueError, TypeError) as e:
    raise ValueError(f"invalid trainer.optimizer_config: {e}") from None


def prepare(experiment, mode, model_dir, config_files=None, params_override=None, tpu=None):
  """(params, strategy name, strategy, task), every check passed, nothing written."""
  params = parse_config(experiment, config_files, params_override, tpu)
  check_run(params, mode, model_dir)
  if params.runtime.mixed_precision_dtype:
    performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  name, strategy = strategy_lib.resolve(params.runtime.distribution_strategy,
                                        params.runtime.tpu)
  check_optimizer(params)
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
  return params, name, strategy, task


def run(params, strategy, task, mode: str, model_dir: str):
  """Trains and/or evaluates as official's runner does; returns its (model,
  logs) (the logs are empty: evaluations go to the summaries)."""
  if "train" in mode:
    train_utils.serialize_config(params, model_dir)
  runner = preemption.PreemptibleExperimentRunner(
      distribution_strategy=strategy, task=task, mode=mode, params=params,
      model_dir=model_dir)
  return runner.run()


def main(argv):
  """The command: checks everything, then runs; a bad run exits with its message."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    params, name, strategy, task = prepare(
        FLAGS.experiment, FLAGS.mode, FLAGS.model_dir, FLAGS.config_file,
        FLAGS.params_override, FLAGS.tpu)
  except ValueError as e:
    sys.exit(f"pipelines.train: error: {e}")
  print(f"pipelines.train: {FLAGS.experiment} mode={FLAGS.mode} strategy={name} "
        f"replicas={strategy.num_replicas_in_sync} model_dir={FLAGS.model_dir}",
        flush=True)
  run(params, strategy, task, FLAGS.mode, FLAGS.model_dir)
  logging.info("Done: %s", FLAGS.model_dir)


if __name__ == "__main__":
  app.run(main)
