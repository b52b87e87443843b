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


IDENTITY = {"seed": 0, "tasks": ["iris_mlp_16_relu", "stdlib_clm_64"], "horizon": 200,
            "calibrate_horizon": 2000, "unroll": 50, "calibrate_seeds": 2}

# Two tasks, two initializations each. Adam reference per run: three rates.
ADAM = {
    "iris_mlp_16_relu": _adam([3.0, 2.0, 1.0], [0.3, 0.2, 0.1]),
    "iris_mlp_16_relu/seed1": _adam([3.0, 2.0, 1.0], [0.3, 0.2, 0.1]),
    "stdlib_clm_64": _adam([4.0, 3.0, 2.0], [2.0, 1.0, 0.5]),
    "stdlib_clm_64/seed1": _adam([4.0, 3.0, 2.0], [2.0, 1.0, 0.5]),
}


def _run(l200, l2000, diverged=False):
  return {"loss": {"200": l200, "2000": l2000}, "diverged": diverged}


REFERENCE = {"identity": dict(IDENTITY, grid=[1e-4, 1e-3, 1e-2]), "losses": ADAM}

CALIBRATION = {"identity": dict(IDENTITY, theta_sha256="0" * 64), "runs": [
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
    rows = calibration_tasks.summarize(CALIBRATION, REFERENCE)
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

  def test_floor_is_the_given_learning_rate(self):
    # Against Adam(1e-4) (3.0 / 0.3 and 4.0 / 2.0) no task is behind at x1.
    first = calibration_tasks.summarize(CALIBRATION, REFERENCE, floor=1e-4)[0]
    self.assertEqual(first["behind"], [])
    with self.assertRaisesRegex(ValueError, r"floor 0.5 is not one of"):
      calibration_tasks.summarize(CALIBRATION, REFERENCE, floor=0.5)

  def test_reference_of_other_tasks_or_settings_is_refused(self):
    fewer = dict(REFERENCE, losses={k: v for k, v in ADAM.items() if not k.endswith("seed1")})
    with self.assertRaisesRegex(ValueError, r"no runs for .*seed1"):
      calibration_tasks.summarize(CALIBRATION, fewer)
    other_seed = dict(REFERENCE, identity=dict(REFERENCE["identity"], seed=1))
    with self.assertRaisesRegex(ValueError, r"not this calibration's: seed 0 against 1"):
      calibration_tasks.summarize(CALIBRATION, other_seed)
    with self.assertRaisesRegex(ValueError, r"Adam reference file is not one the binary"):
      calibration_tasks.summarize(CALIBRATION, ADAM)  # the losses without the identity
    with self.assertRaisesRegex(ValueError, r"calibration file is not one the binary"):
      calibration_tasks.summarize({"runs": []}, REFERENCE)

  def test_has_attention_matches_the_models_built(self):
    first_of_family = {}
    for spec in tasks_lib.META_TRAIN + tasks_lib.ALL_HELD_OUT:
      first_of_family.setdefault(spec.model, spec)
    self.assertEqual(set(first_of_family), set(tasks_lib.MODELS))
    for spec in first_of_family.values():
      task = tasks_lib.Task(spec)
      ranks = {len(v.shape) for v in task.model.trainable_variables}
      self.assertEqual(tasks_lib.has_attention(spec), 3 in ranks, spec.name)

  def test_command_line_prints_the_table(self):
    with tempfile.TemporaryDirectory() as tmp:
      adam_path, cal_path = os.path.join(tmp, "adam.json"), os.path.join(tmp, "cal.json")
      with open(adam_path, "w") as f:
        json.dump(REFERENCE, f)
      with open(cal_path, "w") as f:
        json.dump(CALIBRATION, f)
      out = subprocess.run(
          [sys.executable, "-m", "benchmarks.calibration_tasks", f"--adam={adam_path}",
           cal_path], cwd=_ROOT, capture_output=True, text=True, check=True).stdout
    self.assertIn("| x1 | 1.250 | 0.500 | 2.000 | stdlib_clm_64@200, stdlib_clm_64@2000 |",
                  out)
    self.assertIn("| x2 | inf | inf | 0.000 |", out)
    with tempfile.TemporaryDirectory() as tmp:
      adam_path, cal_path = os.path.join(tmp, "adam.json"), os.path.join(tmp, "cal.json")
      with open(adam_path, "w") as f:
        json.dump(dict(REFERENCE, identity=dict(IDENTITY, horizon=100)), f)
      with open(cal_path, "w") as f:
        json.dump(CALIBRATION, f)
      bad = subprocess.run(
          [sys.executable, "-m", "benchmarks.calibration_tasks", f"--adam={adam_path}",
           cal_path], cwd=_ROOT, capture_output=True, text=True)
    self.assertNotEqual(bad.returncode, 0)
    self.assertIn("horizon 200 against 100", bad.stderr)


if __name__ == "__main__":
  tf.test.main()
