"""The per-task split of a calibration's scores: against hand counts, the
binary's own score, the attention split of the models actually built, and a
reference of other tasks refused."""

import json
import os
import subprocess
import sys
import tempfile

import tensorflow as tf

from benchmarks import calibration_tasks
from mnemosyne_tf.meta import tasks as tasks_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _adam(losses_200, losses_2000):
  """Adam reference of one run: three learning rates, all stable."""
  return {lr: {"200": a, "2000": b, "stable": True}
          for lr, a, b in zip(("0.0001", "0.001", "0.01"), losses_200, losses_2000)}


# Two tasks, two initializations each. Adam reference per run: three rates.
ADAM = {
    "iris_mlp_16_relu": _adam([3.0, 2.0, 1.0], [0.3, 0.2, 0.1]),
    "iris_mlp_16_relu/seed1": _adam([3.0, 2.0, 1.0], [0.3, 0.2, 0.1]),
    "stdlib_clm_64": _adam([4.0, 3.0, 2.0], [2.0, 1.0, 0.5]),
    "stdlib_clm_64/seed1": _adam([4.0, 3.0, 2.0], [2.0, 1.0, 0.5]),
}


def _run(l200, l2000, diverged=False):
  return {"loss": {"200": l200, "2000": l2000}, "diverged": diverged}


CALIBRATION = {"identity": {}, "runs": [
    # x1: iris beats every rate at 200 (0 better) and two at 2000 (1 better:
    # 0.1 < 0.15); seed1 1.5 at 200 (1 better: 1.0), 0.05 at 2000 (0). clm:
    # 3.5 (2 better: 3.0, 2.0), 1.5 (2 better: 1.0, 0.5); seed1 the same.
    [1.0, {"score": 0.0, "per_task": {
        "iris_mlp_16_relu": _run(0.5, 0.15), "iris_mlp_16_relu/seed1": _run(1.5, 0.05),
        "stdlib_clm_64": _run(3.5, 1.5), "stdlib_clm_64/seed1": _run(3.5, 1.5)}}],
    # x2: iris diverges on one initialization (inf); clm beats every rate.
    [2.0, {"score": 0.0, "per_task": {
        "iris_mlp_16_relu": _run(0.5, 0.05), "iris_mlp_16_relu/seed1": _run(None, None, True),
        "stdlib_clm_64": _run(1.0, 0.1), "stdlib_clm_64/seed1": _run(1.0, 0.1)}}],
]}


class CalibrationTasksTest(tf.test.TestCase):

  def test_scores_per_task_and_kind_against_hand_counts(self):
    rows = calibration_tasks.summarize(CALIBRATION, ADAM)
    first, second = rows
    self.assertEqual(first["multiplier"], 1.0)
    # iris: counts 0, 1, 1, 0 -> 0.5; clm: 2, 2, 2, 2 -> 2.
    self.assertEqual(first["tasks"], {"iris_mlp_16_relu": 0.5, "stdlib_clm_64": 2.0})
    self.assertEqual(first["no_attention"], 0.5)
    self.assertEqual(first["attention"], 2.0)
    # The binary's score: all 8 counts, (0+1+1+0+2+2+2+2)/8.
    self.assertEqual(first["score"], 1.25)
    # Behind Adam(1e-3): clm's mean 3.5 > 3.0 at 200, 1.5 > 1.0 at 2000; iris's
    # mean 1.0 <= 2.0 and 0.1 <= 0.2.
    self.assertEqual(sorted(first["behind"]), ["stdlib_clm_64@200", "stdlib_clm_64@2000"])
    self.assertEqual(second["tasks"]["iris_mlp_16_relu"], float("inf"))
    self.assertEqual(second["no_attention"], float("inf"))
    self.assertEqual(second["attention"], 0.0)
    self.assertEqual(second["score"], float("inf"))
    self.assertEqual(sorted(second["behind"]), ["iris_mlp_16_relu@200", "iris_mlp_16_relu@2000"])

  def test_reference_of_other_tasks_is_refused(self):
    adam = {k: v for k, v in ADAM.items() if not k.endswith("seed1")}
    with self.assertRaisesRegex(ValueError, r"no runs for .*seed1"):
      calibration_tasks.summarize(CALIBRATION, adam)

  def test_has_attention_matches_the_models_built(self):
    for name in ("iris_mlp_16_relu", "digits_cnn_8x16", "iris_ft_16", "stdlib_clm_64"):
      task = tasks_lib.Task(tasks_lib.get_spec(name))
      ranks = {len(v.shape) for v in task.model.trainable_variables}
      self.assertEqual(tasks_lib.has_attention(task.spec), 3 in ranks, name)

  def test_command_line_prints_the_table(self):
    with tempfile.TemporaryDirectory() as tmp:
      adam_path, cal_path = os.path.join(tmp, "adam.json"), os.path.join(tmp, "cal.json")
      with open(adam_path, "w") as f:
        json.dump({"losses": ADAM}, f)
      with open(cal_path, "w") as f:
        json.dump(CALIBRATION, f)
      out = subprocess.run(
          [sys.executable, "-m", "benchmarks.calibration_tasks", f"--adam={adam_path}",
           cal_path], cwd=_ROOT, capture_output=True, text=True, check=True).stdout
    self.assertIn("| x1 | 1.250 | 0.500 | 2.000 | stdlib_clm_64@200, stdlib_clm_64@2000 |",
                  out)
    self.assertIn("| x2 | inf | inf | 0.000 |", out)


if __name__ == "__main__":
  tf.test.main()
