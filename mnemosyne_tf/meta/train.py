r"""Meta-trains a learned optimizer and exports its weights.

    python -m mnemosyne_tf.meta.train --config=configs/meta/coordinate.yaml \
        --workdir=runs/coordinate [--meta_steps=N]

Start it again with the same --workdir to resume from its last checkpoint (the
config must be the same). Writes to --workdir: config.yaml, checkpoints/,
tensorboard/, metrics.jsonl, meta_training_curve.png and weights.npz (the
parameter-only weights file, loadable with `Mnemosyne(weights=...)`).
"""

import logging
import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402


def load_config(path: str, meta_steps=None):
  from mnemosyne_tf.meta import config as config_lib
  cfg = config_lib.MetaTrainConfig.from_yaml(path)
  if meta_steps is not None:
    cfg = config_lib.MetaTrainConfig.from_dict(dict(cfg.to_dict(), meta_steps=meta_steps))
  return cfg


def check_workdir_config(workdir: str, cfg) -> None:
  """A workdir holds one run: resuming with a different config is refused."""
  from mnemosyne_tf.meta import config as config_lib
  saved = os.path.join(workdir, "config.yaml")
  if os.path.exists(saved):
    previous = config_lib.MetaTrainConfig.from_yaml(saved)
    # Calibration only changes the export: it may be added to a finished run.
    ignore = {"meta_steps", "log_every", "checkpoint_every", "calibrate_step_size",
              "calibrate_horizon", "calibrate_criterion", "calibrate_seeds",
              "calibrate_stability_margin", "calibrate_adam_floor",
              "calibrate_rise_tolerance"}
    a = {k: v for k, v in previous.to_dict().items() if k not in ignore}
    b = {k: v for k, v in cfg.to_dict().items() if k not in ignore}
    if a != b:
      changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
      raise ValueError(f"{workdir} holds a run with a different config (fields {changed} "
                       "differ); use a new --workdir")
  os.makedirs(workdir, exist_ok=True)
  with open(saved, "w") as f:
    f.write(cfg.to_yaml())


class _SkipRetracingWarnings(logging.Filter):
  def filter(self, record):
    return "triggered tf.function retracing" not in record.getMessage()


_SKIP_RETRACING_WARNINGS = _SkipRetracingWarnings()


def quiet_retracing_warnings() -> None:
  """Drops TensorFlow's "triggered tf.function retracing" warnings from its
  logger. The trainer compiles one segment function per task from the same
  Python code, and TensorFlow counts every task's first trace as a retrace:
  with more than four tasks it warns, suggesting a bug that is not there
  (each task's function is traced once: its arguments are tensors of fixed
  shapes). Other TensorFlow warnings pass. Adding the filter twice adds it
  once (logging.Filterer keeps one of each object)."""
  import tensorflow as tf
  tf.get_logger().addFilter(_SKIP_RETRACING_WARNINGS)


def define_flags():
  """Defines this binary's flags (only when it runs as a binary)."""
  flags.DEFINE_string("config", None, "Meta-training config (YAML).", required=True)
  flags.DEFINE_string("workdir", None, "Output and checkpoint directory.",
                                 required=True)
  flags.DEFINE_integer("meta_steps", None, "Override the config's meta_steps.")

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  quiet_retracing_warnings()
  try:
    cfg = load_config(flags.FLAGS.config, flags.FLAGS.meta_steps)
    check_workdir_config(flags.FLAGS.workdir, cfg)
  except ValueError as e:
    raise app.UsageError(str(e))
  from mnemosyne_tf.meta import curves
  from mnemosyne_tf.meta import trainer
  command = "python -m mnemosyne_tf.meta.train " + " ".join(
      shlex.quote(a) for a in sys.argv[1:])
  meta = trainer.MetaTrainer(cfg, flags.FLAGS.workdir, command=command)
  print(f"meta-training {cfg.network} on {list(cfg.tasks)}: {cfg.meta_steps} meta-steps of "
        f"{len(cfg.tasks)} x {cfg.unroll} optimizee steps, horizon {cfg.horizon}, "
        f"estimator {cfg.estimator}", flush=True)
  try:
    summary = meta.train(log=lambda line: print(line, flush=True))
  except (trainer.CalibrationError, trainer.MetaTrainingError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  if cfg.meta_steps == 0:  # nothing meta-trained, no curve
    print(f"wrote {summary['path']} (sha256 {summary['sha256']})")
    return
  png = curves.plot_metrics(meta.metrics_path, os.path.join(flags.FLAGS.workdir,
                                                           "meta_training_curve.png"))
  print(f"wrote {summary['path']} (sha256 {summary['sha256']}) and {png}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
