"""Tests of the tf_keras front end and its registration in tf-models-official."""

import keras
import numpy as np
import tensorflow as tf
import tf_keras
from absl.testing import parameterized
from official.modeling.optimization import optimizer_factory

import mnemosyne_tf
from mnemosyne_tf import tf_keras_optimizer as tko
from tests import testing


class TfKerasFrontEndTest(tf.test.TestCase, parameterized.TestCase):

  def test_same_updates_as_the_keras3_front_end(self):
    shapes = [(4, 3), (3,), ()]
    streams = [testing.random_gradients(s, 8, seed=i) for i, s in enumerate(shapes)]
    init = [np.asarray(np.random.RandomState(9).randn(*s), np.float32) for s in shapes]
    k3_vars = [keras.Variable(v) for v in init]
    tfk_vars = [tf.Variable(v) for v in init]
    k3 = mnemosyne_tf.Mnemosyne(learning_rate=0.7, weight_decay=0.01)
    tfk = tko.MnemosyneTfKeras(learning_rate=0.7, weight_decay=0.01)
    for t in range(8):
      k3.apply_gradients([(tf.constant(s[t]), v) for s, v in zip(streams, k3_vars)])
      tfk.apply_gradients([(tf.constant(s[t]), v) for s, v in zip(streams, tfk_vars)])
    for a, b in zip(k3_vars, tfk_vars):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-8)
    for a, b in zip(k3._states, tfk._states):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-8)

  def test_early_boost_of_a_weights_file_acts_as_in_the_keras3_front_end(self):
    # A weights file whose config has the early boost: both front ends take
    # the same steps, for a model without a rank-3 variable (boosted: the
    # first step is 1 + 3 * (1 - 1/4) = 3.25x the plain rule's) and for one
    # with it (exempt: the plain rule's steps).
    from mnemosyne_tf import weights as weights_lib
    plain = weights_lib.load_weights("coordinate_v24")
    path = self.create_tempdir().full_path + "/boosted.npz"
    weights_lib.save(path, plain.network,
                     dict(plain.config, early_boost=4.0, early_boost_steps=4),
                     plain.theta, plain.provenance)
    for shapes, boosted in (([(4, 3), (3,)], True), ([(4, 3), (2, 2, 3)], False)):
      streams = [testing.random_gradients(s, 3, seed=i) for i, s in enumerate(shapes)]
      deltas = {}
      for name, weights in (("plain", "coordinate_v24"), ("boosted", path)):
        k3_vars = [keras.Variable(np.ones(s, np.float32)) for s in shapes]
        tfk_vars = [tf.Variable(np.ones(s, np.float32)) for s in shapes]
        k3 = mnemosyne_tf.Mnemosyne(weights=weights)
        tfk = tko.MnemosyneTfKeras(weights=weights)
        for t in range(3):
          k3.apply_gradients([(tf.constant(g[t]), v) for g, v in zip(streams, k3_vars)])
          tfk.apply_gradients([(tf.constant(g[t]), v) for g, v in zip(streams, tfk_vars)])
          if t == 0:
            deltas[name] = k3_vars[0].numpy() - 1.0
        for a, b in zip(k3_vars, tfk_vars):
          self.assertAllClose(a, b, rtol=1e-6, atol=1e-8)
      factor = 3.25 if boosted else 1.0
      self.assertAllClose(deltas["boosted"], factor * deltas["plain"], rtol=1e-5, msg=shapes)

  def test_non_finite_gradient_skips_the_variable(self):
    var = tf.Variable([1.0, 2.0])
    opt = tko.MnemosyneTfKeras()
    opt.apply_gradients([(tf.constant([0.5, -0.5]), var)])
    before, state = var.numpy(), opt._states[0].numpy()
    opt.apply_gradients([(tf.constant([np.nan, 1.0]), var)])
    self.assertAllEqual(var, before)
    self.assertAllEqual(opt._states[0], state)

  def test_float16_variable_keeps_float32_state(self):
    var = tf.Variable(tf.ones([3], tf.float16))
    opt = tko.MnemosyneTfKeras(weights="hand_set_v0")  # first step: RMS 1e-3
    opt.apply_gradients([(tf.constant([1.0, -1.0, 2.0], tf.float16), var)])
    self.assertEqual(opt._states[0].dtype, tf.float32)
    self.assertEqual(var.dtype, tf.float16)
    self.assertAllClose(var, [1 - 1e-3, 1 + 1e-3, 1 - 1e-3], atol=1e-3)

  def test_compile_fit_trains(self):
    x, y = testing.digits(256)
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.layers.Dense(16, activation="relu", input_shape=(64,)),
                                 tf_keras.layers.Dense(10)])
    model.compile(tko.MnemosyneTfKeras(),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.fit(x, y, batch_size=32, epochs=8, verbose=0).history["loss"]
    self.assertLess(loss[-1], 0.9 * loss[0])

  def test_config_round_trip(self):
    opt = tko.MnemosyneTfKeras(learning_rate=0.5, clipnorm=1.0)
    config = opt.get_config()
    self.assertEqual(config["learning_rate"], 0.5)
    self.assertEqual(tko.MnemosyneTfKeras.from_config(config).get_config(), config)

  @parameterized.parameters({"learning_rate": -1.0}, {"mode": "x"}, {"weights": "nope"},
                            {"weight_decay": -1.0})
  def test_invalid_arguments_raise(self, **kwargs):
    with self.assertRaises(ValueError):
      tko.MnemosyneTfKeras(**kwargs)


class OfficialFactoryTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_factory_builds_mnemosyne_from_an_experiment_config(self, use_legacy):
    config = tko.MnemosyneOptimizationConfig({
        "optimizer": {"type": "mnemosyne",
                      "mnemosyne": {"weight_decay": 0.01, "clipnorm": 1.0}},
        "learning_rate": {"type": "cosine",
                          "cosine": {"initial_learning_rate": 1.0, "decay_steps": 100}},
    })
    factory = optimizer_factory.OptimizerFactory(config)
    opt = factory.build_optimizer(factory.build_learning_rate(),
                                  use_legacy_optimizer=use_legacy)
    self.assertIsInstance(opt, tko.MnemosyneTfKeras)
    self.assertEqual(opt.weight_decay, 0.01)
    self.assertEqual(opt.clipnorm, 1.0)
    var = tf.Variable(tf.ones([4]))
    opt.apply_gradients([(tf.constant([1.0, 2.0, -1.0, 0.5]), var)])
    self.assertNotAllClose(var, tf.ones([4]))

  def test_config_yaml_round_trip(self):
    config = tko.MnemosyneOptimizationConfig(
        {"optimizer": {"type": "mnemosyne"},
         "learning_rate": {"type": "constant", "constant": {"learning_rate": 1.0}}})
    again = tko.MnemosyneOptimizationConfig(config.as_dict())
    self.assertEqual(again.as_dict(), config.as_dict())
    self.assertEqual(again.optimizer.mnemosyne.weights, "")  # "": the mode's default
    factory = optimizer_factory.OptimizerFactory(again)
    opt = factory.build_optimizer(factory.build_learning_rate())
    self.assertEqual(opt.get_config()["weights"], mnemosyne_tf.DEFAULT_WEIGHTS)


if __name__ == "__main__":
  tf.test.main()
