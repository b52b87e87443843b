"""The shrinking-gradients benchmark: its Adam rows against Adam's formula
computed independently, a rule with a fixed step against that step, and the
binary's outputs and argument checks."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from benchmarks import shrinking_gradients as sg
from mnemosyne_tf import weights as weights_lib


class ShrinkingGradientsTest(tf.test.TestCase):

  def test_adam_rows_follow_adams_formula(self):
    grads = sg.gradients(size=64, switch=50, high=1e-3, low=1e-6)
    self.assertLen(grads, 100)
    self.assertAllClose(np.sqrt(np.mean(grads[0] ** 2)), 1e-3, rtol=0.3)
    self.assertAllClose(np.sqrt(np.mean(grads[-1] ** 2)), 1e-6, rtol=0.3)
    plus = sg.updates("adam:0.01", grads)
    sizes = [sg.rms(u) for u in plus]
    m = v = np.zeros(64)
    expected = []
    for t, g in enumerate(grads, start=1):  # keras's Adam: beta 0.9/0.999, eps 1e-7
      g = g.astype(np.float64)
      m = 0.9 * m + 0.1 * g
      v = 0.999 * v + 0.001 * g * g
      update = 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
      expected.append(np.sqrt(np.mean(update ** 2)))
    self.assertAllClose(sizes, expected, rtol=1e-3)
    summary = sg.summarize(sizes, 50)
    self.assertAllClose(summary["before"], np.mean(expected[40:50]), rtol=1e-3)
    self.assertAllClose(summary["late"], np.mean(expected[90:100]), rtol=1e-3)
    self.assertLess(summary["late / before"], 0.05)  # Adam's step shrinks
    # Adam is odd in the gradient: negating every gradient negates every update.
    minus = sg.updates("adam:0.01", [-g for g in grads])
    self.assertLess(sg.even_part(plus, minus, (90, 100)), 1e-5)

  def test_even_part_measures_a_move_that_ignores_the_gradient_sign(self):
    # A stand-in rule: -0.1 g plus a constant move of 1e-3 whatever g.
    grads = sg.gradients(size=32, switch=50, high=1e-3, low=1e-6)
    plus = [-0.1 * g + 1e-3 for g in grads]
    minus = [0.1 * g + 1e-3 for g in grads]
    expected = sg.rms((np.array(plus[90:]) + np.array(minus[90:])) / 2) / sg.rms(plus[90:])
    self.assertAllClose(expected, 1e-3 / sg.rms(plus[90:]), rtol=1e-6)
    self.assertAllClose(sg.even_part(plus, minus, (90, 100)), expected, rtol=1e-6)

  def test_a_normalized_rule_moves_by_its_step_whatever_the_gradients(self):
    # hand_set_v0 normalizes its update to RMS = its step size (1e-3).
    step = float(np.exp(weights_lib.load_weights("hand_set_v0").theta["log_step_size"]))
    sizes = [sg.rms(u) for u in sg.updates(
        "hand_set_v0", sg.gradients(size=64, switch=50, high=1e-3, low=1e-6))]
    self.assertAllClose(sizes, [step] * 100, rtol=1e-4)

  def test_binary_writes_its_table_and_refuses_bad_weights_first(self):
    out_dir = self.create_tempdir().full_path
    args = [sys.executable, "-m", "benchmarks.shrinking_gradients", "--size=16",
            "--switch=50", "--adam=0.01", "--weights=hand_set_v0", f"--out_dir={out_dir}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(out_dir, "shrinking_gradients.json")) as f:
      saved = json.load(f)
    self.assertEqual(sorted(saved["rows"]), ["adam:0.01", "hand_set_v0"])
    self.assertLen(saved["update_rms"]["adam:0.01"], 100)
    with open(os.path.join(out_dir, "shrinking_gradients.md")) as f:
      self.assertIn("| hand_set_v0 |", f.read())
    bad_dir = os.path.join(out_dir, "bad")
    result = subprocess.run(args[:-2] + ["--weights=nope", f"--out_dir={bad_dir}"],
                            capture_output=True, text=True, timeout=600)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("nope", result.stderr)
    self.assertFalse(os.path.exists(bad_dir))


if __name__ == "__main__":
  tf.test.main()
