"""The demo runs end to end on a short schedule and writes its outputs."""

import json
import os

import tensorflow as tf

from mnemosyne_tf import demo


class DemoTest(tf.test.TestCase):

  def test_short_demo_trains_both_and_writes_outputs(self):
    out_dir = self.create_tempdir().full_path
    results = demo.run(epochs=2, batch_size=128, out_dir=out_dir, jit_compile=False, seed=0)
    self.assertEqual([r["name"] for r in results], ["Mnemosyne (default)", "Adam (lr=1e-3)"])
    for r in results:
      self.assertLen(r["train_loss"], 3)  # the start, then each epoch
      self.assertLess(r["train_loss"][-1], r["train_loss"][0])
    # Both start from the same weights.
    self.assertEqual(results[0]["train_loss"][0], results[1]["train_loss"][0])
    with open(os.path.join(out_dir, "demo.json")) as f:
      self.assertEqual(json.load(f)["results"][0]["train_loss"], results[0]["train_loss"])
    with open(os.path.join(out_dir, "demo.png"), "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    self.assertIn("| Mnemosyne (default) |", demo.table(results))

  def test_named_weights_are_used_and_bad_ones_fail_before_training(self):
    out_dir = self.create_tempdir().full_path
    results = demo.run(epochs=1, batch_size=256, out_dir=out_dir, jit_compile=False, seed=0,
                       weights="coordinate_v10")
    self.assertEqual(results[0]["name"], "Mnemosyne (coordinate_v10)")
    with open(os.path.join(out_dir, "demo.json")) as f:
      self.assertEqual(json.load(f)["weights"], "coordinate_v10")
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(ValueError, "unknown weights 'nope'"):
      demo.run(epochs=1, batch_size=256, out_dir=empty, jit_compile=False, seed=0,
               weights="nope")
    self.assertEqual(os.listdir(empty), [])


if __name__ == "__main__":
  tf.test.main()
