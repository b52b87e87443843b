"""The held-out bar per cell and seed, from evaluations run with several seeds.

    python -m benchmarks.bar_seeds --rule=coordinate_v24 --baseline=lstm_v1 \
        <evaluation.json> [<evaluation.json> ...]

`mnemosyne_tf.meta.evaluate` measures the bar of the meta-training issue on
one seed (`--seed`: the initialization and the batches). Several held-out
cells are decided by where a noisy or chaotic run ends, so one seed can
mislead. Run the evaluation once per seed (and per task set, if you like) and
give this every `evaluation.json`: for each cell (task x horizon) and seed it
reports the bar's three parts for the learned rule `--rule` (the weights'
name or file stem): below Adam(1e-3), within one point of Adam's grid (the
evaluation's own verdicts), and below the baseline `--baseline` (a learned
optimizer's weights, e.g. the LSTM's; strictly lower loss, a non-finite loss
is never lower). It reads the files and trains nothing; a (task, seed) given
twice, or a file without the rule or the baseline, is an error.
"""

import json
import math
import os
from typing import Dict, List, Tuple

from absl import app
from absl import flags

Cell = Tuple[str, str]  # (task, "1x" or "10x")


def _label_of(evaluation: dict, weights: str, path: str) -> str:
  """The label of the learned optimizer that runs `weights` (a name, or a file
  whose stem is that name)."""
  found = [label for label, spec in evaluation["optimizers"].items()
           if spec.split(":", 1)[0] in ("mnemosyne", "learned")
           and os.path.splitext(os.path.basename(spec.split(":", 1)[1]))[0] == weights]
  if len(found) != 1:
    raise ValueError(f"{path}: {len(found)} optimizers run the weights {weights!r} "
                     f"(optimizers: {sorted(evaluation['optimizers'])}); expected one")
  return found[0]


def cells_of(evaluation: dict, rule: str, baseline: str, path: str = "evaluation") -> dict:
  """{(task, "1x"|"10x"): {"adam": bool, "grid": bool, "baseline": bool,
  "loss": float, "baseline_loss": float}} for one evaluation.json."""
  from mnemosyne_tf.meta import evaluate
  rule_label = _label_of(evaluation, rule, path)
  base_label = _label_of(evaluation, baseline, path)
  out = {}
  for task, runs in evaluation["results"].items():
    verdict = evaluation["verdicts"][rule_label][task]
    for i, (name, step) in enumerate((("1x", evaluation["horizon"]),
                                      ("10x", evaluation["steps"]))):
      mine = evaluate.loss_at(runs[rule_label], step)
      theirs = evaluate.loss_at(runs[base_label], step)
      out[(task, name)] = {
          "adam": bool(verdict["beats_adam_1e-3"][i]),
          "grid": verdict["grid_points_better"][i] <= 1,
          "baseline": math.isfinite(mine) and not mine >= theirs,
          "loss": mine, "baseline_loss": theirs}
  return out


def collect(evaluations: List[Tuple[str, dict]], rule: str, baseline: str) -> Dict[int, dict]:
  """{seed: {cell: verdicts}} over (path, evaluation.json) pairs."""
  by_seed: Dict[int, dict] = {}
  for path, evaluation in evaluations:
    cells = by_seed.setdefault(int(evaluation["seed"]), {})
    for cell, verdict in cells_of(evaluation, rule, baseline, path).items():
      if cell in cells:
        raise ValueError(f"{path}: {cell[0]} at seed {evaluation['seed']} is also in "
                         "another file; give each (task, seed) once")
      cells[cell] = verdict
  return by_seed


def markdown(by_seed: Dict[int, dict], rule: str, baseline: str) -> str:
  seeds = sorted(by_seed)
  cells = sorted({c for cs in by_seed.values() for c in cs}, key=lambda c: (c[0], c[1] != "1x"))
  lines = [f"Per cell and seed: A = below Adam(1e-3), G = within one grid point of tuned "
           f"Adam, B = below {baseline}; - = not met; blank = not run.", "",
           "| cell | " + " | ".join(f"seed {s}" for s in seeds) + f" | {rule} loss, "
           f"per seed | {baseline} loss, per seed |",
           "|---|" + "---|" * (len(seeds) + 2)]
  for cell in cells:
    marks, mine, theirs = [], [], []
    for s in seeds:
      v = by_seed[s].get(cell)
      if v is None:
        marks.append(""), mine.append(""), theirs.append("")
        continue
      marks.append("".join(k if v[key] else "-" for k, key in
                           (("A", "adam"), ("G", "grid"), ("B", "baseline"))))
      mine.append(f"{v['loss']:.3g}")
      theirs.append(f"{v['baseline_loss']:.3g}")
    lines.append(f"| {cell[0]}, {cell[1]} | " + " | ".join(marks) + " | "
                 + " / ".join(mine) + " | " + " / ".join(theirs) + " |")
  lines += ["", "| seed | cells | below Adam(1e-3) | within one grid point | "
            f"below {baseline} |", "|---|---|---|---|---|"]
  for s in seeds:
    vs = list(by_seed[s].values())
    lines.append(f"| {s} | {len(vs)} | {sum(v['adam'] for v in vs)} | "
                 f"{sum(v['grid'] for v in vs)} | {sum(v['baseline'] for v in vs)} |")
  return "\n".join(lines)


flags.DEFINE_string("rule", "coordinate_v24", "Weights (name or file stem) of the learned rule.")
flags.DEFINE_string("baseline", "lstm_v1", "Weights (name or file stem) of the baseline.")


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more evaluation.json files")
  evaluations = []
  for path in argv[1:]:
    with open(path) as f:
      evaluations.append((path, json.load(f)))
  try:
    by_seed = collect(evaluations, flags.FLAGS.rule, flags.FLAGS.baseline)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  print(markdown(by_seed, flags.FLAGS.rule, flags.FLAGS.baseline))


if __name__ == "__main__":
  app.run(main)
