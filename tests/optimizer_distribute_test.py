"""Mnemosyne under tf.distribute.MirroredStrategy on two logical CPUs."""

from tests import testing

_NUM_CPUS = testing.use_logical_cpus(2)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

import mnemosyne_tf  # noqa: E402
from mnemosyne_tf import tf_keras_optimizer  # noqa: E402


class MirroredStrategyTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    if _NUM_CPUS < 2:
      self.skipTest("needs two logical CPUs (TensorFlow was initialized first)")
    self.strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    self.x, self.y = testing.digits(128)

  def _fit(self, strategy):
    with strategy.scope():
      model = testing.tiny_mlp(seed=3)
      model.compile(mnemosyne_tf.Mnemosyne(weight_decay=1e-3),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(self.x, self.y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    return model

  def test_fit_on_two_replicas_equals_one_device(self):
    mirrored = self._fit(self.strategy)
    single = self._fit(tf.distribute.get_strategy())
    self.assertEqual(mirrored.distribute_strategy.num_replicas_in_sync, 2)
    for a, b in zip(mirrored.get_weights(), single.get_weights()):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(mirrored.optimizer.variables, single.optimizer.variables):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-6)

  def test_custom_loop_state_is_mirrored_and_identical_on_replicas(self):
    with self.strategy.scope():
      model = testing.tiny_mlp(seed=5)
      opt = mnemosyne_tf.Mnemosyne()
      opt.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="sum")
    dataset = self.strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(32))

    @tf.function
    def step(batch):
      def replica_step(x, y):
        with tf.GradientTape() as tape:
          loss = loss_fn(y, model(x)) / 32.0
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
      self.strategy.run(replica_step, args=batch)

    for batch in dataset:
      step(batch)
    self.assertEqual(int(opt.iterations.numpy()), 4)
    for state in opt._states:
      replicas = self.strategy.experimental_local_results(state.value)
      self.assertLen(replicas, 2)
      self.assertAllEqual(replicas[0], replicas[1])
      self.assertGreater(float(tf.reduce_max(tf.abs(replicas[0][0]))), 0.0)

  def _fit_tf_keras(self, strategy):
    # Layers of one shape (8x8 kernels, 8-vectors): variables that share a
    # traced update must still each be updated from their own values.
    with strategy.scope():
      tf_keras.utils.set_random_seed(7)
      model = tf_keras.Sequential(
          [tf_keras.layers.Dense(8, activation="tanh", input_shape=(64,))]
          + [tf_keras.layers.Dense(8, activation="tanh") for _ in range(2)]
          + [tf_keras.layers.Dense(10)])
      model.compile(tf_keras_optimizer.MnemosyneTfKeras(),
                    tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(self.x, self.y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    return model

  def test_tf_keras_fit_on_two_replicas_equals_one_device(self):
    # Reduction by copies, not collectives: collective instances of the Keras 3
    # tests above (same process) would collide with tf_keras's.
    mirrored = self._fit_tf_keras(tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()))
    single = self._fit_tf_keras(tf.distribute.get_strategy())
    for a, b in zip(mirrored.get_weights(), single.get_weights()):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-6)


if __name__ == "__main__":
  tf.test.main()
