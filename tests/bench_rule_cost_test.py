"""The update-cost benchmark's harness: argument checks, the median and
ratios, and a tiny run in a subprocess that writes what it printed."""

import json
import os
import re
import subprocess
import sys

import tensorflow as tf

from benchmarks import rule_cost


class RuleCostTest(tf.test.TestCase):

  def test_bad_arguments_are_named(self):
    specs = ["mnemosyne:coordinate_v24", "adam:0.001"]
    for args, needle in (((0, specs, "adam:0.001", 3, 10), "--size"),
                         ((10, specs, "adam:0.001", 0, 10), "--rounds"),
                         ((10, [], "adam:0.001", 3, 10), "empty"),
                         ((10, specs + specs[:1], "adam:0.001", 3, 10), "twice"),
                         ((10, specs, "adam:0.01", 3, 10), "--baseline"),
                         ((0.5, specs, "adam:0.001", 3, 10), "--size")):
      with self.assertRaisesRegex(ValueError, needle):
        rule_cost.check_args(*args)
    rule_cost.check_args(10, specs, "adam:0.001", 3, 10)  # no error

  def test_bad_specs_are_named_before_anything_runs(self):
    for spec, needle in (("sgd:0.1", "unknown optimizer spec"),
                         ("adam:abc", "number > 0"), ("adam:-1", "number > 0"),
                         ("mnemosyne:x+oops", "expected <weights>"),
                         ("mnemosyne:no_such_weights", "unknown weights"),
                         ("mnemosyne:coordinate_v24+no_such_field=1", "no_such_field")):
      with self.assertRaisesRegex(ValueError, f"--optimizers: '{re.escape(spec)}'.*{needle}"):
        rule_cost.build_optimizers(["adam:0.001", spec])
    self.assertEqual(list(rule_cost.build_optimizers(["adam:0.001", "mnemosyne:coordinate_v24"])),
                     ["adam:0.001", "mnemosyne:coordinate_v24"])

  def test_variable_shape_covers_the_size(self):
    for size in (1, 999, 1000, 2001, 10 ** 6 + 7):
      rows, cols = rule_cost.variable_shape(size)
      self.assertGreaterEqual(rows * cols, size)
      self.assertLess(rows * cols - size, rows, msg=size)  # less than one column more

  def test_table_is_the_median_over_the_baselines_median(self):
    self.assertEqual(rule_cost.median([3.0, 1.0, 2.0]), 2.0)
    self.assertEqual(rule_cost.median([4.0, 1.0]), 2.5)
    rows = rule_cost.table({"a": [0.3, 0.1, 0.2], "b": [0.05, 0.04, 0.9]}, "b")
    self.assertEqual([r["optimizer"] for r in rows], ["a", "b"])
    self.assertAllClose([r["ms_per_update"] for r in rows], [200.0, 50.0])
    self.assertAllClose([r["ratio"] for r in rows], [4.0, 1.0])

  def test_tiny_run_writes_its_table(self):
    out_dir = self.create_tempdir().full_path
    specs = "mnemosyne:coordinate_v24,mnemosyne:coordinate_v24+step_adaptation_rate=0,adam:0.001"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.rule_cost", "--size=2001", "--rounds=1",
         "--steps_per_call=2", f"--optimizers={specs}", f"--out_dir={out_dir}"],
        capture_output=True, text=True, timeout=240)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(out_dir, "rule_cost.json")) as fh:
      saved = json.load(fh)
    self.assertEqual([r["optimizer"] for r in saved["rows"]], specs.split(","))
    for row in saved["rows"]:
      seconds = saved["seconds"][row["optimizer"]]
      self.assertLen(seconds, 1)
      self.assertAllClose(row["ms_per_update"], seconds[0] * 1e3)
      self.assertAllClose(row["ratio"], seconds[0] / saved["seconds"]["adam:0.001"][0])
      self.assertGreater(saved["mean_abs_change"][row["optimizer"]], 0.0)
    self.assertEqual(saved["meta"]["size"], 2002)  # 2 rows of 1,001
    # Each spec ran its own rule: the variant without the step adaptation
    # moves the variable by another amount than the default.
    change = saved["mean_abs_change"]
    self.assertNotAlmostEqual(change[specs.split(",")[0]], change[specs.split(",")[1]], places=7)
    with open(os.path.join(out_dir, "rule_cost.md")) as fh:
      self.assertEqual(fh.read(), rule_cost.markdown(saved["rows"], saved["meta"]) + "\n")


if __name__ == "__main__":
  tf.test.main()
