"""Tests of pipelines.figures: optimizer specs, reading summaries, the plot."""

import os

from absl.testing import parameterized
import tensorflow as tf

from pipelines import figures


class OptimizerSpecTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      ("mnemosyne", "mnemosyne", "mnemosyne", 1.0, "coordinate"),
      ("mnemosyne:tensor@0.5", "mnemosyne_tensor_lr0.5", "mnemosyne", 0.5, "tensor"),
      ("adam@1e-3", "adam_lr1e-3", "adam", 1e-3, None),
      ("adam", "adam", "adam", 1e-3, None),
      ("adamw@3e-4", "adamw_lr3e-4", "adamw", 3e-4, None),
  )
  def test_specs(self, spec, label, kind, rate, mode):
    got_label, config = figures.parse_optimizer(spec)
    self.assertEqual(got_label, label)
    self.assertEqual(config.optimizer.type, kind)
    self.assertAlmostEqual(config.learning_rate.constant.learning_rate, rate)
    if mode:
      self.assertEqual(config.optimizer.mnemosyne.mode, mode)

  def test_weights_of_names_the_weights_a_run_used(self):
    from mnemosyne_tf import weights as weights_lib
    for spec, name in (("mnemosyne", weights_lib.DEFAULT_WEIGHTS),
                       ("mnemosyne:tensor", weights_lib.DEFAULT_WEIGHTS_BY_MODE["tensor"]),
                       ("mnemosyne:super", weights_lib.DEFAULT_WEIGHTS_BY_MODE["super"])):
      optimizer = figures.parse_optimizer(spec)[1].as_dict()["optimizer"]
      got = figures.weights_of(optimizer)
      self.assertEqual(got["name"], name)
      self.assertEqual(got["sha256"], weights_lib.load_weights(name).sha256)
    optimizer = figures.parse_optimizer("mnemosyne")[1].as_dict()["optimizer"]
    optimizer["mnemosyne"]["weights"] = "coordinate_v2"
    self.assertEqual(figures.weights_of(optimizer)["name"], "coordinate_v2")
    self.assertIsNone(figures.weights_of(figures.parse_optimizer("adam@1e-3")[1]
                                         .as_dict()["optimizer"]))

  @parameterized.parameters(("adam:tensor", "only mnemosyne has modes"),
                            ("adam@fast", "is not a number"),
                            ("sgd@0.1", "optimizer must be one of"))
  def test_bad_specs(self, spec, message):
    with self.assertRaisesRegex(ValueError, message):
      figures.parse_optimizer(spec)


class SummariesAndPlotTest(tf.test.TestCase):

  def test_read_scalars_returns_what_was_written_sorted_by_step(self):
    log_dir = self.create_tempdir().full_path
    with tf.summary.create_file_writer(log_dir).as_default():
      for step, loss in [(20, 0.5), (10, 1.0), (30, 0.25)]:
        tf.summary.scalar("training_loss", loss, step=step)
      tf.summary.scalar("accuracy", 0.75, step=30)
    scalars = figures.read_scalars(log_dir)
    self.assertEqual(scalars["training_loss"], [(10, 1.0), (20, 0.5), (30, 0.25)])
    self.assertEqual(scalars["accuracy"], [(30, 0.75)])

  def test_plot_writes_a_png(self):
    path = os.path.join(self.create_tempdir().full_path, "f.png")
    runs = {"mnemosyne": {"training_loss": [(1, 2.0), (2, 1.0)], "validation": {"accuracy": 0.5},
                          "weights": {"name": "coordinate_v24", "sha256": "0" * 64}},
            "adam_lr1e-3": {"training_loss": [(1, 2.0), (2, 1.5)], "validation": {}}}
    figures.plot(runs, "title", path)
    with open(path, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
  tf.test.main()
