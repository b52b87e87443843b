"""A calibration's scores per task, and per kind of model (attention or not).

    python -m benchmarks.calibration_tasks --adam=<workdir>/calibration_adam.json \
        <calibration.json> [<calibration.json> ...]

The binary's calibration (`mnemosyne_tf.meta.train`, `calibrate_step_size`)
prints one score per multiplier: Adam grid points better, averaged over every
task, initialization and horizon (`trainer.adam_rank`). When one multiplier
suits some models and not others, that mean hides it. This splits it: the
same score per task, and averaged over the tasks whose models have attention
(`tasks.has_attention`) and over the others, with the tasks behind the
Adam(1e-3) floor (`trainer.behind_adam`). It reads the files the binary
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


def summarize(calibration: dict, adam: dict, floor: float = 1e-3) -> list:
  """One row per multiplier of a calibration.json: {"multiplier", "score"
  (the binary's), "tasks" (per task), "attention" and "no_attention" (means
  over those tasks; None if there are none), "behind" (cases behind
  Adam(floor))}."""
  from mnemosyne_tf.meta import tasks as tasks_lib
  from mnemosyne_tf.meta import trainer
  missing = {key for _, run in calibration["runs"] for key in run["per_task"]} - set(adam)
  if missing:
    raise ValueError(f"the Adam reference has no runs for {sorted(missing)}: it is not "
                     "the reference of this calibration's tasks and seeds")
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


def markdown(path: str, rows: list) -> str:
  fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
  lines = [f"{path}:", "",
           "| multiplier | score | tasks without attention | tasks with attention "
           "| behind Adam(1e-3) |", "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| x{r['multiplier']:g} | {fmt(r['score'])} | {fmt(r['no_attention'])} "
                 f"| {fmt(r['attention'])} | {', '.join(r['behind']) or 'none'} |")
  lines += ["", "Per task:", ""]
  for r in rows:
    lines.append(f"- x{r['multiplier']:g}: " + ", ".join(
        f"{task} {fmt(score)}" for task, score in r["tasks"].items()))
  return "\n".join(lines)


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more calibration.json files")
  with open(flags.FLAGS.adam) as f:
    adam = json.load(f)["losses"]
  for path in argv[1:]:
    with open(path) as f:
      calibration = json.load(f)
    print(markdown(path, summarize(calibration, adam)) + "\n")


if __name__ == "__main__":
  flags.DEFINE_string("adam", None, "calibration_adam.json of the same tasks and seeds.")
  flags.mark_flag_as_required("adam")
  app.run(main)
