"""A calibration's scores per task, and per kind of model (attention or not).

    python -m benchmarks.calibration_tasks --adam=<workdir>/calibration_adam.json \
        <calibration.json> [<calibration.json> ...]

The binary's calibration (`mnemosyne_tf.meta.train`, `calibrate_step_size`)
prints one score per multiplier: Adam grid points better, averaged over every
task, initialization and horizon (`trainer.adam_rank`). When one multiplier
suits some models and not others, that mean hides it. This splits it: the
same score per task, and averaged over the tasks whose models have attention
(`tasks.has_attention`) and over the others, with the tasks behind the
Adam(1e-3) floor (`trainer.behind_adam`; `--floor` for another rate). It reads the files the binary
writes and trains nothing. The Adam reference must be the one of the same
tasks, seeds and horizons (a workdir's `calibration_adam.json`).
"""

import json
import os
from typing import Dict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402


def task_scores(per_task: dict, adam: dict) -> Dict[str, float]:
  """{task: adam_rank over its initializations} for one multiplier's
  `per_task` (keys "<task>" and "<task>/seed<k>", as `_calibration_cases`)."""
  from mnemosyne_tf.meta import trainer
  groups = {}
  for key, run in per_task.items():
    groups.setdefault(key.split("/")[0], {})[key] = run
  return {task: trainer.adam_rank(runs, adam) for task, runs in groups.items()}


# The identity fields that a calibration and its Adam reference must share
# (both files record them; `trainer.Trainer.calibrate`, `_adam_reference`).
SHARED_IDENTITY = ("seed", "tasks", "horizon", "calibrate_horizon", "unroll", "calibrate_seeds")


def check_reference(calibration: dict, reference: dict) -> None:
  """ValueError unless `reference` (a calibration_adam.json) is the Adam
  reference of `calibration`'s tasks, seeds and horizons."""
  for name, doc, keys in (("calibration", calibration, ("identity", "runs")),
                          ("Adam reference", reference, ("identity", "losses"))):
    if not isinstance(doc, dict) or any(k not in doc for k in keys):
      raise ValueError(f"the {name} file is not one the binary writes (needs the keys "
                       f"{list(keys)})")
  ours, theirs = calibration["identity"], reference["identity"]
  differ = [k for k in SHARED_IDENTITY if ours.get(k) != theirs.get(k)]
  if differ:
    raise ValueError(
        "the Adam reference is not this calibration's: "
        + "; ".join(f"{k} {ours.get(k)!r} against {theirs.get(k)!r}" for k in differ))
  missing = {key for _, run in calibration["runs"] for key in run["per_task"]}
  missing -= set(reference["losses"])
  if missing:
    raise ValueError(f"the Adam reference has no runs for {sorted(missing)}")


def summarize(calibration: dict, reference: dict, floor: float = 1e-3) -> list:
  """One row per multiplier of a calibration.json, given its Adam reference
  (calibration_adam.json): {"multiplier", "score" (`trainer.adam_rank` over
  every task, the number the binary prints and chooses by), "tasks" (the same
  per task), "attention" and "no_attention" (means over those tasks; None if
  there are none), "behind" (the cases behind Adam(floor), as the binary's
  `calibrate_adam_floor`)}. ValueError for a reference of other tasks or
  settings, or a floor that is not one of its learning rates."""
  from mnemosyne_tf.meta import tasks as tasks_lib
  from mnemosyne_tf.meta import trainer
  check_reference(calibration, reference)
  adam = reference["losses"]
  rates = {rate for runs in adam.values() for rate in runs}
  if f"{floor:g}" not in rates:
    raise ValueError(f"floor {floor:g} is not one of the reference's learning rates "
                     f"{sorted(rates, key=float)}")
  rows = []
  for multiplier, run in calibration["runs"]:
    scores = task_scores(run["per_task"], adam)
    kinds = {True: [], False: []}
    for task, score in scores.items():
      kinds[tasks_lib.has_attention(tasks_lib.get_spec(task))].append(score)
    rows.append({
        "multiplier": float(multiplier),
        "score": trainer.adam_rank(run["per_task"], adam),
        "tasks": scores,
        "attention": float(np.mean(kinds[True])) if kinds[True] else None,
        "no_attention": float(np.mean(kinds[False])) if kinds[False] else None,
        "behind": trainer.behind_adam(run["per_task"], adam, floor)})
  return rows


def markdown(path: str, rows: list, floor: float = 1e-3) -> str:
  fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
  lines = [f"{path}:", "",
           "| multiplier | score | tasks without attention | tasks with attention "
           f"| behind Adam({floor:g}) |", "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| x{r['multiplier']:g} | {fmt(r['score'])} | {fmt(r['no_attention'])} "
                 f"| {fmt(r['attention'])} | {', '.join(r['behind']) or 'none'} |")
  lines += ["", "Per task:", ""]
  for r in rows:
    lines.append(f"- x{r['multiplier']:g}: " + ", ".join(
        f"{task} {fmt(score)}" for task, score in r["tasks"].items()))
  return "\n".join(lines)


flags.DEFINE_string("adam", None, "calibration_adam.json of the same tasks and seeds.")
flags.DEFINE_float("floor", 1e-3, "Adam learning rate of the per-task floor.")


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more calibration.json files")
  if not flags.FLAGS.adam:
    raise app.UsageError("--adam (the calibration_adam.json of the same tasks) is required")
  with open(flags.FLAGS.adam) as f:
    reference = json.load(f)
  for path in argv[1:]:
    with open(path) as f:
      calibration = json.load(f)
    try:
      rows = summarize(calibration, reference, flags.FLAGS.floor)
    except ValueError as e:
      raise app.UsageError(f"{path}: {e}") from e
    print(markdown(path, rows, flags.FLAGS.floor) + "\n")


if __name__ == "__main__":
  app.run(main)
