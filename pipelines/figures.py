"""Training loss against steps for a pipeline experiment: Mnemosyne vs Adam at
several learning rates (small-scale reproductions of the paper's figures).

    python -m pipelines.figures --experiment=mnemosyne/vit_finetuning \
        --config_file=configs/experiments/vit_finetuning_tiny.yaml \
        --params_override=task.init_checkpoint=runs/vit_pre \
        --optimizers=mnemosyne,adam@1e-4,adam@1e-3,adam@1e-2 \
        --work_dir=runs/figures/vit_finetuning \
        --out=benchmarks/results/pipelines/vit_finetuning

Generic over experiments: every run is `pipelines.train` (in this process) on
the experiment, config files and override given, with only the optimizer
changed, so every optimizer starts from the same model and sees the same
batches. The training loss is read back from each run's summaries
(work_dir/<optimizer>/train), the last evaluation from work_dir/<optimizer>/
validation. Writes out.png (the figure) and out.json (every number, the command
and the date). A finished run is not trained again (pipelines.train resumes
from its checkpoint), so an interrupted figure continues where it stopped.
"""

import datetime
import json
import os
import platform
import shlex
import sys
from typing import Dict, List, Sequence, Tuple

from absl import app
from absl import flags
import tensorflow as tf

from pipelines import common
from pipelines import train

flags.DEFINE_list("optimizers", ["mnemosyne", "adam@1e-4", "adam@1e-3", "adam@1e-2"],
                  "Optimizers: NAME[:MODE][@LEARNING_RATE], NAME one of "
                  f"{common.OPTIMIZERS}; MODE a Mnemosyne mode.")
flags.DEFINE_string("work_dir", None, "One run directory per optimizer goes here.")
flags.DEFINE_string("out", None, "Output path without extension (.png and .json are written).")

FLAGS = flags.FLAGS


def parse_optimizer(spec: str) -> Tuple[str, common.optimization_config.OptimizationConfig]:
  """("label", optimization config) of "adam@1e-3", "mnemosyne", "mnemosyne:tensor@0.5"."""
  name, _, rate = spec.partition("@")
  name, _, mode = name.partition(":")
  if mode and name != "mnemosyne":
    raise ValueError(f"optimizer {spec!r}: only mnemosyne has modes")
  try:
    learning_rate = float(rate) if rate else None
  except ValueError:
    raise ValueError(f"optimizer {spec!r}: learning rate {rate!r} is not a number") from None
  config = common.optimization(name, learning_rate, mode=mode or "coordinate")
  label = spec.replace("@", "_lr").replace(":", "_")
  return label, config


def weights_of(optimizer: dict):
  """{"name", "sha256"} of the weights a Mnemosyne optimizer config runs (its
  `weights`, or its mode's shipped default when that is empty), None for
  other optimizers: a figure's JSON then says which weights drew it, also
  after the default changes."""
  if optimizer.get("type") != "mnemosyne":
    return None
  from mnemosyne_tf import rule as rule_lib
  config = optimizer.get("mnemosyne") or {}
  name = config.get("weights") or rule_lib.default_weights(config.get("mode") or "coordinate")
  return {"name": name, "sha256": rule_lib.LearnedRule(name).sha256}


def read_scalars(log_dir: str) -> Dict[str, List[Tuple[int, float]]]:
  """{tag: [(step, value), ...] sorted by step} of the TF summaries in log_dir."""
  scalars = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
  return {tag: sorted(points.items()) for tag, points in scalars.items()}


def run_all(experiment: str, config_files: Sequence[str], params_override: str,
            optimizers: Sequence[str], work_dir: str) -> Dict[str, dict]:
  """Trains (or resumes) one run per optimizer; {label: its curves and last eval}."""
  parsed = [parse_optimizer(spec) for spec in optimizers]
  runs = {}
  for label, optimization in parsed:
    model_dir = os.path.join(work_dir, label)
    override = json.dumps({"trainer": {"optimizer_config": optimization.as_dict()}})
    overrides = [o for o in (params_override, override) if o]
    params, _, strategy, task = train.prepare(experiment, "train_and_eval", model_dir,
                                              config_files, overrides)
    print(f"pipelines.figures: {label} -> {model_dir}", flush=True)
    train.run(params, strategy, task, "train_and_eval", model_dir)
    train_scalars = read_scalars(os.path.join(model_dir, "train"))
    validation = read_scalars(os.path.join(
        model_dir, params.trainer.validation_summary_subdir))
    runs[label] = {
        "optimizer": optimization.as_dict()["optimizer"],
        "weights": weights_of(optimization.as_dict()["optimizer"]),
        "learning_rate": optimization.as_dict()["learning_rate"],
        "training_loss": train_scalars.get("training_loss", []),
        "validation": {tag: points[-1][1] for tag, points in validation.items()},
        "validation_step": max((p[-1][0] for p in validation.values()), default=None),
    }
  return runs


def plot(runs: Dict[str, dict], title: str, path: str) -> None:
  """Training loss (log scale) against steps, one line per optimizer."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, run in runs.items():
    steps, losses = zip(*run["training_loss"])
    final = run["validation"]
    suffix = ", ".join(f"{k} {v:.3g}" for k, v in sorted(final.items()))
    weights = f" ({run['weights']['name']})" if run.get("weights") else ""
    ax.plot(steps, losses, label=f"{label}{weights}\neval: {suffix}",
            linewidth=2.2 if label.startswith("mnemosyne") else 1.4)
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("training loss (mean over each logging interval)")
  ax.set_title(title, fontsize=10)
  # Below the axes: the labels carry every evaluation metric and can be long.
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.13))
  ax.grid(alpha=0.3)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for name in ("experiment", "work_dir", "out"):
    if not getattr(FLAGS, name):
      sys.exit(f"pipelines.figures: error: --{name} is required")
  try:
    for spec in FLAGS.optimizers:
      parse_optimizer(spec)
  except ValueError as e:
    sys.exit(f"pipelines.figures: error: {e}")
  runs = run_all(FLAGS.experiment, FLAGS.config_file or [], FLAGS.params_override,
                 FLAGS.optimizers, FLAGS.work_dir)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  command = "python -m pipelines.figures " + shlex.join(sys.argv[1:])
  plot(runs, f"{FLAGS.experiment} ({', '.join(FLAGS.config_file or ['defaults'])})",
       FLAGS.out + ".png")
  with open(FLAGS.out + ".json", "w") as f:
    json.dump({"experiment": FLAGS.experiment, "command": command,
               "config_files": FLAGS.config_file or [],
               "params_override": FLAGS.params_override,
               "date": datetime.date.today().isoformat(),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                          f"TensorFlow {tf.__version__}",
               "runs": runs}, f, indent=1)
  print(f"pipelines.figures: wrote {FLAGS.out}.png and {FLAGS.out}.json")


if __name__ == "__main__":
  app.run(main)
