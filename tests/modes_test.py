"""Mnemosyne's tensor-wise and Super-Mnemosyne modes in both front ends."""

import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import mnemosyne_tf
from mnemosyne_tf import rule as rule_lib
from mnemosyne_tf import tf_keras_optimizer as tko
from mnemosyne_tf import weights as weights_lib
from official.modeling.optimization import optimizer_factory
from tests import testing

MODES = ("tensor", "super")
SHAPES = ((64, 16), (16,), (16, 10), (10,))  # the tiny MLP's variables
# Super-Mnemosyne with a threshold inside the tiny MLP's sizes: mixed modes.
MIXED = {"super_threshold": 100}


def core_trajectory(mode, grads_per_var, params, overrides=None):
  """The updated variables computed by the core directly (no Keras)."""
  rule = rule_lib.LearnedRule(rule_lib.default_weights(mode), config_overrides=overrides)
  net = rule.network
  states = [net.init_state(p) for p in params]
  out = []
  for t, grads in enumerate(grads_per_var, start=1):
    new = []
    for i, (g, p) in enumerate(zip(grads, params)):
      update, states[i] = net.apply(rule.theta, states[i], tf.constant(g), p, t)
      new.append(p + update)
    params = new
    out.append(params)
  return out


def gradient_stream(steps, seed=0):
  return [[testing.random_gradients(s, 1, seed=seed + 10 * t + i)[0]
           for i, s in enumerate(SHAPES)] for t in range(steps)]


def mixed_mode_fixture():
  return [np.linspace(-1, 1, int(np.prod(s))).reshape(s).astype(np.float32) for s in SHAPES]


class DefaultsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*MODES)
  def test_each_mode_loads_its_shipped_meta_trained_weights(self, mode):
    opt = mnemosyne_tf.Mnemosyne(mode=mode)
    self.assertEqual(opt.get_config()["weights"], weights_lib.DEFAULT_WEIGHTS_BY_MODE[mode])
    self.assertEqual(opt.provenance["kind"], "meta_trained")
    self.assertEqual(opt._rule.network.kind, mode)

  @parameterized.parameters(*MODES)
  def test_apply_gradients_equals_the_core_in_both_front_ends(self, mode):
    overrides = MIXED if mode == "super" else {}
    grads = gradient_stream(4)
    params0 = mixed_mode_fixture()
    want = core_trajectory(mode, grads, [tf.constant(p) for p in params0],
                           {"threshold": 100} if overrides else None)
    for make in (lambda: mnemosyne_tf.Mnemosyne(mode=mode, **overrides),
                 lambda: tko.MnemosyneTfKeras(mode=mode, **overrides)):
      opt = make()
      variables = [tf.Variable(p) for p in params0]
      for step_grads, step_want in zip(grads, want):
        opt.apply_gradients([(tf.constant(g), v) for g, v in zip(step_grads, variables)])
        for v, w in zip(variables, step_want):
          self.assertAllClose(v, w, rtol=1e-5, atol=1e-7)


class SlotTest(tf.test.TestCase):

  def test_tensor_mode_state_does_not_grow_with_the_variable(self):
    opt = mnemosyne_tf.Mnemosyne(mode="tensor")
    variables = [keras.Variable(np.zeros(s, np.float32)) for s in ((3,), (300, 200))]
    opt.build(variables)
    self.assertEqual([tuple(s.shape) for s in opt._states], [(168,), (168,)])
    self.assertEqual(opt.state_floats((300, 200)), 168)
    self.assertIsNone(opt.state_floats_per_parameter)

  def test_super_policy_picks_the_layout_per_variable_and_can_be_reversed(self):
    paper = mnemosyne_tf.Mnemosyne(mode="super", super_threshold=100)
    reverse = mnemosyne_tf.Mnemosyne(mode="super", super_threshold=100,
                                     super_small_mode="coordinate")
    for opt, small, large in ((paper, "tensor", "coordinate"),
                              (reverse, "coordinate", "tensor")):
      variables = [keras.Variable(np.zeros(s, np.float32)) for s in SHAPES]
      opt.build(variables)
      for var, state in zip(variables, opt._states):
        mode = small if np.prod(var.shape) < 100 else large
        want = [168] if mode == "tensor" else [27] + list(var.shape)
        self.assertEqual(list(state.shape), want, msg=(var.shape, mode))

  def test_config_round_trip_keeps_mode_and_policy(self):
    opt = mnemosyne_tf.Mnemosyne(mode="super", super_small_mode="coordinate",
                                 super_threshold=512, learning_rate=0.5)
    config = opt.get_config()
    json.dumps(config)
    clone = mnemosyne_tf.Mnemosyne.from_config(config)
    self.assertEqual(clone.get_config(), config)
    self.assertEqual(clone._rule.network.config.threshold, 512)
    self.assertEqual(clone._rule.network.config.small_mode, "coordinate")
    tf_keras_config = tko.MnemosyneTfKeras(mode="tensor").get_config()
    self.assertEqual(tko.MnemosyneTfKeras.from_config(tf_keras_config).get_config(),
                     tf_keras_config)


class ArgumentTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("policy_for_coordinate", {"super_threshold": 10}, "only to mode='super'"),
      ("policy_for_tensor", {"mode": "tensor", "super_small_mode": "tensor"},
       "only to mode='super'"),
      ("bad_small_mode", {"mode": "super", "super_small_mode": "lstm"}, "small_mode"),
      ("bad_threshold", {"mode": "super", "super_threshold": -5}, "threshold"),
      ("weights_of_other_mode", {"mode": "tensor", "weights": "coordinate_v2"},
       "is for network 'coordinate', not 'tensor'"))
  def test_invalid_arguments_raise_before_any_variable(self, kwargs, message):
    for make in (mnemosyne_tf.Mnemosyne, tko.MnemosyneTfKeras):
      created = []

      def creator(next_creator, **kw):
        created.append(kw.get("name"))
        return next_creator(**kw)

      with tf.variable_creator_scope(creator):
        with self.assertRaisesRegex(ValueError, message):
          make(**kwargs)
      self.assertEqual(created, [])


class TrainingTest(tf.test.TestCase, parameterized.TestCase):

  def _fit(self, mode, jit_compile, epochs=8):
    x, y = testing.digits(256)
    model = testing.tiny_mlp(seed=1)
    model.compile(optimizer=mnemosyne_tf.Mnemosyne(mode=mode),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history["loss"]

  @parameterized.parameters(*MODES)
  def test_fit_trains_and_xla_matches_no_xla(self, mode):
    xla_model, xla_loss = self._fit(mode, jit_compile=True)
    plain_model, _ = self._fit(mode, jit_compile=False)
    # The shipped weights take steps of about 1e-3 (normalized): 64 steps of
    # this tiny MLP take the loss from 2.3 to about 1.9 (tensor) / 1.7 (super).
    self.assertLess(xla_loss[-1], 0.85 * xla_loss[0])
    for a, b in zip(xla_model.get_weights(), plain_model.get_weights()):
      self.assertAllClose(a, b, rtol=1e-3, atol=1e-5)

  def test_non_finite_gradient_leaves_tensor_mode_state_untouched(self):
    good, bad = keras.Variable(np.ones(40, np.float32)), keras.Variable(np.ones(30, np.float32))
    opt = mnemosyne_tf.Mnemosyne(mode="tensor")
    opt.apply_gradients([(tf.ones(40), good), (tf.ones(30), bad)])
    bad_before, state_before = bad.numpy(), opt._states[1].numpy()
    good_before = good.numpy()
    grad = np.ones(30, np.float32)
    grad[3] = np.nan
    opt.apply_gradients([(tf.ones(40) * 0.5, good), (tf.constant(grad), bad)])
    self.assertAllEqual(bad, bad_before)
    self.assertAllEqual(opt._states[1], state_before)
    self.assertNotAllClose(good, good_before)

  def test_tensor_mode_save_and_load_continues_identically(self):
    x, y = testing.digits(128)
    model = testing.tiny_mlp(seed=4)
    model.compile(mnemosyne_tf.Mnemosyne(mode="tensor"),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    path = os.path.join(self.create_tempdir().full_path, "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    self.assertEqual(restored.optimizer.mode, "tensor")
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    restored.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(restored.get_weights(), model.get_weights()):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-7)

  def test_official_factory_builds_super_mnemosyne_with_its_policy(self):
    config = tko.MnemosyneOptimizationConfig({
        "optimizer": {"type": "mnemosyne",
                      "mnemosyne": {"mode": "super", "super_threshold": 100}},
        "learning_rate": {"type": "constant", "constant": {"learning_rate": 1.0}}})
    factory = optimizer_factory.OptimizerFactory(config)
    opt = factory.build_optimizer(factory.build_learning_rate())
    self.assertIsInstance(opt, tko.MnemosyneTfKeras)
    self.assertEqual(opt._rule.network.config.threshold, 100)
    self.assertEqual(opt.get_config()["weights"], weights_lib.DEFAULT_WEIGHTS_BY_MODE["super"])


if __name__ == "__main__":
  tf.test.main()
