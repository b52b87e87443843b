"""The per-seed bar: verdicts against hand-made evaluations (built with the
evaluation's own summarize), the baseline comparison's edge cases, and the
refusals."""

import json
import math
import os
import subprocess
import sys
import tempfile

import tensorflow as tf

from benchmarks import bar_seeds
from mnemosyne_tf.meta import evaluate

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _curve(at_200, at_2000):
  return {"steps": [0, 200, 2000], "loss": [3.0, at_200, at_2000]}


def _evaluation(seed, rule_losses, lstm_losses, task="iris_mlp_32x32_silu",
                rule_spec="mnemosyne:runs/x/coordinate_v24.npz"):
  """An evaluation.json with Adam at three rates (losses 1.0 / 0.1, 0.5 /
  0.05, 2.0 / 0.2 for 1e-3, 1e-2 and 1e-4), the rule and the LSTM."""
  optimizers = {"mnemosyne rule": rule_spec, "lstm lstm_v1": "learned:lstm_v1",
                "adam 0.0001": "adam:0.0001", "adam 0.001": "adam:0.001",
                "adam 0.01": "adam:0.01"}
  runs = {"mnemosyne rule": _curve(*rule_losses), "lstm lstm_v1": _curve(*lstm_losses),
          "adam 0.0001": _curve(2.0, 0.2), "adam 0.001": _curve(1.0, 0.1),
          "adam 0.01": _curve(0.5, 0.05)}
  results = {task: runs}
  _, verdicts = evaluate.summarize(results, 200, 2000, ["mnemosyne rule", "lstm lstm_v1"])
  return {"seed": seed, "horizon": 200, "steps": 2000, "optimizers": optimizers,
          "results": results, "verdicts": verdicts}


class BarSeedsTest(tf.test.TestCase):

  def test_verdicts_per_cell_and_seed(self):
    # Seed 0: at 1x 0.7 is below Adam(1e-3) (1.0), one grid point (0.5) is
    # better, and the LSTM (0.7) is not beaten (a tie is not lower). At 10x
    # 0.3 is above Adam(1e-3) (0.1), all three points are better, below the
    # LSTM.
    # Seed 1: 0.4 beats everything at 1x; at 10x the rule's loss is NaN.
    by_seed = bar_seeds.collect([
        ("a", _evaluation(0, (0.7, 0.3), (0.7, 0.4))),
        ("b", _evaluation(1, (0.4, math.nan), (0.9, 0.5)))], "coordinate_v24", "lstm_v1")
    s0, s1 = by_seed[0], by_seed[1]
    cell_1x, cell_10x = ("iris_mlp_32x32_silu", "1x"), ("iris_mlp_32x32_silu", "10x")
    self.assertEqual({k: s0[cell_1x][k] for k in ("adam", "grid", "baseline")},
                     {"adam": True, "grid": True, "baseline": False})
    self.assertEqual({k: s0[cell_10x][k] for k in ("adam", "grid", "baseline")},
                     {"adam": False, "grid": False, "baseline": True})
    self.assertEqual({k: s1[cell_1x][k] for k in ("adam", "grid", "baseline")},
                     {"adam": True, "grid": True, "baseline": True})
    # NaN is never lower, and every grid point is better than it.
    self.assertEqual({k: s1[cell_10x][k] for k in ("adam", "grid", "baseline")},
                     {"adam": False, "grid": False, "baseline": False})
    table = bar_seeds.markdown(by_seed, "coordinate_v24", "lstm_v1")
    self.assertIn("| iris_mlp_32x32_silu, 1x | AG- | AGB |", table)
    self.assertIn("| 0 | 2 | 1 | 1 | 1 |", table)

  def test_refusals(self):
    same = _evaluation(0, (0.7, 0.3), (0.7, 0.4))
    with self.assertRaisesRegex(ValueError, r"at seed 0 is also in another file"):
      bar_seeds.collect([("a", same), ("b", same)], "coordinate_v24", "lstm_v1")
    with self.assertRaisesRegex(ValueError, r"0 optimizers run the weights 'coordinate_v15'"):
      bar_seeds.collect([("a", same)], "coordinate_v15", "lstm_v1")

  def test_command_line(self):
    with tempfile.TemporaryDirectory() as tmp:
      paths = []
      for seed, rule in ((0, (0.7, 0.3)), (1, (0.4, 0.01))):
        paths.append(os.path.join(tmp, f"{seed}.json"))
        with open(paths[-1], "w") as f:
          json.dump(_evaluation(seed, rule, (0.9, 0.5)), f)
      out = subprocess.run([sys.executable, "-m", "benchmarks.bar_seeds", *paths],
                           cwd=_ROOT, capture_output=True, text=True, check=True).stdout
      self.assertIn("| 1 | 2 | 2 | 2 | 2 |", out)
      bad = subprocess.run([sys.executable, "-m", "benchmarks.bar_seeds", paths[0], paths[0]],
                           cwd=_ROOT, capture_output=True, text=True)
    self.assertNotEqual(bad.returncode, 0)
    self.assertIn("give each (task, seed) once", bad.stderr)


if __name__ == "__main__":
  tf.test.main()
