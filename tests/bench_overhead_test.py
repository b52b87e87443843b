"""The overhead benchmark's harness (smoke test): sizes, state bytes, slopes."""

import math

import numpy as np
import tensorflow as tf

from benchmarks import overhead
from mnemosyne_tf import weights as weights_lib


class OverheadHarnessTest(tf.test.TestCase):

  def test_mlp_width_hits_the_requested_size(self):
    for size in (1e4, 1e5, 1e6, 1e7):
      params = overhead.build_mlp(overhead.mlp_width(size)).count_params()
      self.assertAllClose(params, size, rtol=0.02, msg=size)

  def test_slope_is_least_squares(self):
    rng = np.random.RandomState(0)
    pts = [(float(p), 3e-9 * p + 0.01 + 1e-4 * rng.randn()) for p in (1e4, 1e5, 1e6, 1e7)]
    self.assertAllClose(overhead.slope(pts), np.polyfit(*zip(*pts), 1)[0], rtol=1e-6)
    self.assertTrue(np.isnan(overhead.slope(pts[:1])))

  def test_slope_ratio_compares_the_same_sizes(self):
    # Adam's cost bends above 1e6; an optimizer skipped there must be compared
    # with Adam's slope over the sizes both ran, not over all of Adam's.
    adam = {1e4: 1.0, 1e5: 2.0, 1e6: 11.0, 1e7: 1000.0}
    rows = [{"model": f"mlp {p:g}", "params": p, "xla": True, "optimizer": "adam",
             "seconds_per_step": t} for p, t in adam.items()]
    rows += [{"model": f"mlp {p:g}", "params": p, "xla": True, "optimizer": "lstm",
              "seconds_per_step": 3.0 * adam[p]} for p in (1e4, 1e5, 1e6)]
    rows += [{"model": "mlp 1e+07", "params": 1e7, "xla": True, "optimizer": "lstm",
              "seconds_per_step": None}]  # out of memory
    rows += [{"model": "digits CNN", "params": 5e4, "xla": True, "optimizer": "lstm",
              "seconds_per_step": 1e9}]  # not an MLP: not in the slope
    slopes, ratios = overhead.slopes_of(rows)
    self.assertAllClose(ratios["on"]["lstm"], 3.0)
    self.assertAllClose(ratios["on"]["adam"], 1.0)
    self.assertAllClose(slopes["on"]["adam"], np.polyfit(list(adam), list(adam.values()), 1)[0])

  def test_small_run_reports_ratios_and_state_bytes(self):
    factories = overhead.optimizer_factories(lstm_weights="")
    self.assertEqual(list(factories), [f"mnemosyne_{mode}" for mode in
                                       weights_lib.DEFAULT_WEIGHTS_BY_MODE] + ["adam"])
    self.assertIn("mnemosyne_coordinate", factories)
    # Two of them here (the harness is what is tested, not each mode's cost).
    factories = {name: factories[name] for name in ("mnemosyne_coordinate", "adam")}
    lines = []
    rows, slopes, ratios = overhead.run_overhead([2e3, 8e3], factories, repeats=1,
                                                 batch_size=8, include_cnn=False,
                                                 log=lines.append)
    self.assertLen(rows, 2 * 2 * 2)  # sizes x XLA x optimizers
    self.assertLen(lines, 4)
    for row in rows:
      # float32 slots: the default coordinate rule keeps 1 + 2 heads x (4 x 2 + 4 + 1)
      # = 27 floats per parameter, plus 2 for its step adaptation.
      want = 8.0 if row["optimizer"] == "adam" else 4.0 * 29
      self.assertAllClose(row["state_bytes_per_param"], want, msg=row)
      adam = [r for r in rows if (r["model"], r["xla"], r["optimizer"])
              == (row["model"], row["xla"], "adam")][0]
      self.assertAllClose(row["ratio_to_adam"],
                          row["seconds_per_step"] / adam["seconds_per_step"])
    # Adam against itself is 1 whenever its slope is defined; two tiny models
    # timed once can give a slope <= 0 (timing noise), and then the ratio is
    # reported as undefined rather than as a number.
    for tag in ("on", "off"):
      if slopes[tag]["adam"] > 0:
        self.assertEqual(ratios[tag]["adam"], 1.0)
      else:
        self.assertTrue(math.isnan(ratios[tag]["adam"]), msg=(tag, slopes, ratios))
    text = overhead.markdown(rows, ratios, {"date": "d", "machine": "m", "command": "c",
                                            "repeats": 1, "batch_size": 8})
    self.assertIn("mnemosyne_coordinate 116, adam 8", text)


if __name__ == "__main__":
  tf.test.main()
