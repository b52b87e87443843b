"""Optimizee tasks: the split, determinism, and functional losses."""

import numpy as np
import tensorflow as tf

from mnemosyne_tf.meta import tasks


class TasksTest(tf.test.TestCase):

  def test_split_is_disjoint_and_held_out_covers_other_architectures(self):
    train = {s.name for s in tasks.META_TRAIN}
    held = {s.name for s in tasks.HELD_OUT}
    fresh = {s.name for s in tasks.HELD_OUT_FRESH}
    self.assertEmpty(train & held)
    self.assertEmpty(fresh & (train | held))
    self.assertEqual(len(tasks.HELD_OUT_FRESH), 2)
    self.assertIn("vit", {s.model for s in tasks.HELD_OUT})
    self.assertNotIn("vit", {s.model for s in tasks.META_TRAIN})
    self.assertNotIn("breast_cancer", {s.dataset for s in tasks.META_TRAIN})

  def test_every_task_computes_the_same_loss_as_its_keras_model(self):
    for spec in tasks.META_TRAIN + tasks.HELD_OUT + tasks.HELD_OUT_FRESH:
      task = tasks.Task(spec)
      params = task.init_params(3)
      for var, value in zip(task.model.trainable_variables, params):
        var.assign(value)
      x, y = task.batches(tf.constant([0, 1]), 1)
      logits = task.model(x[0])
      want = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y[0], logits))
      self.assertAllClose(task.loss(params, x[0], y[0]), want, rtol=1e-5, msg=spec.name)
      self.assertEqual(x.shape[1], spec.batch_size)

  def test_inits_and_batches_are_deterministic(self):
    task = tasks.Task(tasks.get_spec("wine_mlp_32_relu"))
    a, b, c = task.init_params(1), task.init_params(1), task.init_params(2)
    for x, y in zip(a, b):
      self.assertAllEqual(x, y)
    self.assertNotAllClose(a[0], c[0])
    scaled = task.init_params(1, init_scale=2.0)
    self.assertAllClose(scaled[0], 2.0 * a[0])
    self.assertAllEqual(task.batches(tf.constant([4, 5]), 3)[0],
                        task.batches(tf.constant([4, 5]), 3)[0])

  def test_tabular_features_are_standardized(self):
    x, _, classes = tasks.load_dataset("breast_cancer")
    self.assertEqual(classes, 2)
    self.assertAllClose(x.mean(0), np.zeros(x.shape[1]), atol=1e-5)

  def test_unknown_names_raise(self):
    with self.assertRaisesRegex(ValueError, "unknown task"):
      tasks.get_spec("mnist")
    with self.assertRaisesRegex(ValueError, "unknown dataset"):
      tasks.load_dataset("mnist")


if __name__ == "__main__":
  tf.test.main()
