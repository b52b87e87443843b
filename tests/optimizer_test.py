"""Tests of the Keras 3 front end `mnemosyne_tf.Mnemosyne`."""

import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import mnemosyne_tf
from mnemosyne_tf import rule as rule_lib
from tests import testing


def core_updates(grads, param, learning_rate=1.0, weight_decay=0.0):
  """The updates computed by the core directly (no Keras), for comparison."""
  rule = rule_lib.LearnedRule(mnemosyne_tf.DEFAULT_WEIGHTS)
  net = rule.network
  state = net.init_state(param)
  params = [param]
  for t, g in enumerate(grads, start=1):
    update, state = net.apply(rule.theta, state, tf.constant(g), params[-1], t,
                              learning_rate, weight_decay)
    params.append(params[-1] + update)
  return params[1:]


def count_variables_created(fn):
  """Calls fn; returns how many tf.Variables were created while it ran."""
  created = []

  def creator(next_creator, **kwargs):
    created.append(kwargs.get("name"))
    return next_creator(**kwargs)

  with tf.variable_creator_scope(creator):
    try:
      fn()
    except Exception:  # the caller asserts on the exception separately
      pass
  return len(created)


class SingleStepTest(tf.test.TestCase, parameterized.TestCase):

  def test_apply_gradients_equals_the_core(self):
    param0 = np.linspace(-1, 1, 12).reshape(3, 4).astype(np.float32)
    grads = testing.random_gradients((3, 4), 6)
    var = keras.Variable(param0)
    opt = mnemosyne_tf.Mnemosyne()
    want = core_updates(grads, tf.constant(param0))
    for g, w in zip(grads, want):
      opt.apply_gradients([(tf.constant(g), var)])
      self.assertAllClose(var, w, rtol=1e-6, atol=1e-7)
    self.assertEqual(int(opt.iterations), 6)

  def test_plain_tf_variables_step_like_keras_variables(self):
    """tf.Variables (tf.Module parameters, a soft prompt) are trained too."""
    param0 = np.linspace(-1, 1, 12).reshape(3, 4).astype(np.float32)
    grads = testing.random_gradients((3, 4), 4)
    var = tf.Variable(param0, name="prompt")
    opt = mnemosyne_tf.Mnemosyne()
    for g, w in zip(grads, core_updates(grads, tf.constant(param0))):
      opt.apply_gradients([(tf.constant(g), var)])
      self.assertAllClose(var, w, rtol=1e-6, atol=1e-7)

  def test_learning_rate_is_a_multiplier_and_schedules_work(self):
    grads = testing.random_gradients((5,), 1)
    deltas = []
    for lr in (1.0, 0.25, lambda: 0.25,
               keras.optimizers.schedules.ExponentialDecay(0.25, 10, 0.5)):
      var = keras.Variable(np.zeros(5, np.float32))
      mnemosyne_tf.Mnemosyne(learning_rate=lr).apply_gradients([(tf.constant(grads[0]), var)])
      deltas.append(var.numpy())
    for d in deltas[1:]:
      self.assertAllClose(d, 0.25 * deltas[0], rtol=1e-5)
    self.assertAllClose(deltas[0], core_updates(grads, tf.zeros(5))[0], rtol=1e-5, atol=1e-9)
    # The hand-set rule's first step is its step size, 1e-3, in RMS.
    var = keras.Variable(np.zeros(5, np.float32))
    mnemosyne_tf.Mnemosyne(weights="hand_set_v0").apply_gradients(
        [(tf.constant(grads[0]), var)])
    self.assertAllClose(np.sqrt(np.mean(var.numpy() ** 2)), 1e-3, rtol=1e-4)

  def test_weight_decay_and_exclusions(self):
    param0 = np.ones((2, 3), np.float32)
    g = tf.constant(testing.random_gradients((2, 3), 1)[0])
    plain, decayed, excluded = (keras.Variable(param0, name=n) for n in ("a", "b", "c"))
    mnemosyne_tf.Mnemosyne().apply_gradients([(g, plain)])
    mnemosyne_tf.Mnemosyne(weight_decay=0.01).apply_gradients([(g, decayed)])
    opt = mnemosyne_tf.Mnemosyne(weight_decay=0.01)
    opt.exclude_from_weight_decay(var_names=["c"])
    opt.apply_gradients([(g, excluded)])
    self.assertAllClose(decayed.numpy() - plain.numpy(), -0.01 * param0, rtol=1e-5)
    self.assertAllClose(excluded, plain)

  def test_early_boost_scales_the_learned_step_not_weight_decay(self):
    # With fixed gradients the learned part L_t of every step is the same
    # for all three optimizers (it does not depend on the parameter on rank-2
    # and rank-1 tensors), so: plain (no decay) steps by L_t, boosted (decay
    # 0.1) by m_t * L_t - 0.1 * p, m_t = 1 + 3 * max(0, 1 - t / 2); and a model
    # with a rank-3 variable is exempt: its steps are plain's.
    shapes = [(5, 4), (4,)]
    grads = [testing.random_gradients(shape, 3, seed=11 + i) for i, shape in enumerate(shapes)]
    boost = {"early_boost": 4.0, "early_boost_steps": 2}

    def deltas(variables, optimizer, extra=()):
      out = []
      for t in range(3):
        before = [v.numpy() for v in variables]
        optimizer.apply([tf.constant(g[t]) for g in grads] + [tf.zeros(e.shape) for e in extra],
                        variables + list(extra))
        out.append([v.numpy() - b for v, b in zip(variables, before)])
      return out

    start = [np.full(shape, 0.5, np.float32) for shape in shapes]
    plain = deltas([keras.Variable(p) for p in start],
                      mnemosyne_tf.LearnedOptimizer(weights="coordinate_v24"))
    boosted_vars = [keras.Variable(p) for p in start]
    boosted_opt = mnemosyne_tf.LearnedOptimizer(weights="coordinate_v24", weight_decay=0.1,
                                                network_overrides=boost)
    for t in range(3):
      before = [v.numpy() for v in boosted_vars]  # for the decay term
      boosted_opt.apply([tf.constant(g[t]) for g in grads], boosted_vars)
      m = 1 + 3 * max(0.0, 1 - (t + 1) / 2)
      for v, b, l in zip(boosted_vars, before, plain[t]):
        self.assertAllClose(v.numpy() - b, m * l - 0.1 * b, rtol=1e-4, atol=1e-7, msg=t)
    self.assertGreater(np.abs(plain[0][0]).max(), 1e-5)  # steps that are not 0
    # The shared rule needs the model's shapes for a rule with a schedule,
    # and only then.
    rule = rule_lib.LearnedRule("coordinate_v24", config_overrides=boost)
    slot = rule.initial_slot((4,))
    with self.assertRaisesRegex(ValueError, "needs model_shapes"):
      rule.step(slot, tf.ones([4]), tf.ones([4]), 1, 1.0, 0.0)
    plain_rule = rule_lib.LearnedRule("coordinate_v24")
    self.assertAllClose(plain_rule.step(slot, tf.ones([4]), tf.ones([4]), 1, 1.0, 0.0)[0],
                        plain_rule.step(slot, tf.ones([4]), tf.ones([4]), 1, 1.0, 0.0,
                                        [(4,)])[0])
    exempt = deltas([keras.Variable(p) for p in start],
                       mnemosyne_tf.LearnedOptimizer(weights="coordinate_v24",
                                                     network_overrides=boost),
                       extra=[keras.Variable(np.zeros((2, 2, 3), np.float32))])
    for t in range(3):
      for e, l in zip(exempt[t], plain[t]):
        self.assertAllClose(e, l, rtol=1e-5, atol=1e-9)

  @parameterized.parameters(("clipvalue", 0.05), ("clipnorm", 0.1),
                            ("global_clipnorm", 0.1))
  def test_base_clipping_options_clip_what_the_core_sees(self, option, value):
    grads = testing.random_gradients((4, 3), 3, seed=5)
    clip = {"clipvalue": lambda g: tf.clip_by_value(g, -value, value),
            "clipnorm": lambda g: tf.clip_by_norm(g, value),
            "global_clipnorm": lambda g: tf.clip_by_global_norm([g], value)[0][0]}[option]
    clipped_var = keras.Variable(np.zeros((4, 3), np.float32))
    opt = mnemosyne_tf.Mnemosyne(**{option: value})
    for g in grads:
      opt.apply_gradients([(tf.constant(g), clipped_var)])
    want = core_updates([clip(tf.constant(g)).numpy() for g in grads], tf.zeros((4, 3)))
    self.assertAllClose(clipped_var, want[-1], rtol=1e-5, atol=1e-8)

  def test_non_finite_gradient_leaves_variable_and_state_untouched(self):
    good, bad = keras.Variable(np.ones(4, np.float32)), keras.Variable(np.ones(3, np.float32))
    opt = mnemosyne_tf.Mnemosyne(weights="hand_set_v0", weight_decay=0.1)
    opt.apply_gradients([(tf.ones(4), good), (tf.ones(3), bad)])
    bad_before, state_before = bad.numpy(), opt._states[1].numpy()
    good_before = good.numpy()
    opt.apply_gradients([(tf.ones(4), good), (tf.constant([1.0, np.nan, np.inf]), bad)])
    self.assertAllEqual(bad, bad_before)
    self.assertAllEqual(opt._states[1], state_before)
    self.assertTrue(np.all(np.isfinite(state_before)))
    # The other variable still took its step: -1e-3 (unit gradient, hand-set RMS step
    # 1e-3) - 0.1 * value (decoupled weight decay).
    self.assertAllClose(good, good_before - 1e-3 - 0.1 * good_before, rtol=1e-5)


class ArgumentTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("negative_lr", {"learning_rate": -1.0}, "learning_rate"),
      ("zero_lr", {"learning_rate": 0.0}, "learning_rate"),
      ("nan_lr", {"learning_rate": float("nan")}, "learning_rate"),
      ("string_lr", {"learning_rate": "fast"}, "learning_rate"),
      ("bool_lr", {"learning_rate": True}, "learning_rate"),
      ("mode", {"mode": "diagonal"}, "mode"),
      ("unknown_weights", {"weights": "nope"}, "unknown weights"),
      ("missing_file", {"weights": "/nonexistent/w.npz"}, "does not exist"),
      ("sha_mismatch", {"weights_sha256": "0" * 64}, "sha256"),
      ("negative_wd", {"weight_decay": -0.1}, "weight_decay"),
      ("two_clips", {"clipnorm": 1.0, "clipvalue": 1.0}, "Only one of"),
      ("bad_accumulation", {"gradient_accumulation_steps": 1}, "gradient_accumulation"),
      ("unknown_kwarg", {"momentum": 0.9}, "not recognized"))
  def test_invalid_argument_raises_before_any_variable(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      mnemosyne_tf.Mnemosyne(**kwargs)
    self.assertEqual(count_variables_created(lambda: mnemosyne_tf.Mnemosyne(**kwargs)), 0)

  def test_valid_construction_creates_variables(self):
    # The counter above can see variables: a valid optimizer creates some.
    self.assertGreater(count_variables_created(mnemosyne_tf.Mnemosyne), 0)


class KerasIntegrationTest(tf.test.TestCase, parameterized.TestCase):

  def _fit(self, jit_compile, epochs=8, optimizer=None):
    x, y = testing.digits(256)
    model = testing.tiny_mlp(seed=1)
    model.compile(optimizer=optimizer or mnemosyne_tf.Mnemosyne(),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history["loss"]

  def test_compile_fit_with_and_without_xla_agree_and_train(self):
    xla_model, xla_loss = self._fit(jit_compile=True)
    plain_model, plain_loss = self._fit(jit_compile=False)
    self.assertLess(xla_loss[-1], 0.9 * xla_loss[0])
    for a, b in zip(xla_model.get_weights(), plain_model.get_weights()):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-5)

  def test_custom_loop_under_xla_equals_eager(self):
    x, y = testing.digits(64)
    results = []
    for jit in (True, False):
      model = testing.tiny_mlp(seed=2)
      opt = mnemosyne_tf.Mnemosyne()
      loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

      def step(x, y):
        with tf.GradientTape() as tape:
          loss = loss_fn(y, model(x))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                model.trainable_variables))
        return loss

      step = tf.function(step, jit_compile=True) if jit else step
      for _ in range(5):
        step(x, y)
      results.append(model.get_weights())
    for a, b in zip(*results):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-6)

  def test_indexed_slices_equal_dense_gradients(self):
    table0 = np.random.RandomState(0).randn(20, 4).astype(np.float32)
    ids = tf.constant([[1, 3, 3], [7, 1, 0]])
    results = []
    for densify in (False, True):
      table = keras.Variable(table0)
      opt = mnemosyne_tf.Mnemosyne()
      for _ in range(3):
        with tf.GradientTape() as tape:
          loss = tf.reduce_sum(tf.square(tf.gather(table, ids) - 1.0))
        grad = tape.gradient(loss, table.value)
        self.assertIsInstance(grad, tf.IndexedSlices)
        opt.apply_gradients([(tf.convert_to_tensor(grad) if densify else grad, table)])
      results.append(table.numpy())
    self.assertAllClose(results[0], results[1], rtol=1e-6)
    self.assertFalse(np.allclose(results[0], table0))

  def test_embedding_model_fits(self):
    x = np.random.RandomState(0).randint(0, 50, size=(64, 6))
    y = (x.sum(-1) % 2).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(50, 8),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(mnemosyne_tf.Mnemosyne(), keras.losses.BinaryCrossentropy(from_logits=True),
                  jit_compile=True)
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0)
    self.assertTrue(np.all(np.isfinite(history.history["loss"])))

  @parameterized.parameters("float16", "bfloat16")
  def test_low_precision_variables_keep_float32_state(self, dtype):
    param0 = np.linspace(-1, 1, 8).astype(np.float32)
    grads = testing.random_gradients((8,), 4)
    var = keras.Variable(param0.astype(dtype), dtype=dtype)
    opt = mnemosyne_tf.Mnemosyne()
    for g in grads:
      opt.apply_gradients([(tf.cast(g, dtype), var)])
    self.assertEqual(opt._states[0].dtype, "float32")
    self.assertEqual(var.dtype, dtype)
    want = core_updates(grads, tf.constant(param0))[-1]
    self.assertAllClose(tf.cast(var, tf.float32), want, atol=2e-2)
    self.assertFalse(np.allclose(tf.cast(var, tf.float32), param0, atol=1e-3))

  def test_mixed_precision_policy_fits(self):
    x, y = testing.digits(128)
    model = testing.tiny_mlp(dtype="mixed_float16")
    model.compile(keras.optimizers.LossScaleOptimizer(mnemosyne_tf.Mnemosyne()),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
    self.assertLess(loss[-1], loss[0])


class SerializationTest(tf.test.TestCase):

  def test_config_round_trip(self):
    opt = mnemosyne_tf.Mnemosyne(learning_rate=0.5, weight_decay=0.01, clipnorm=1.0)
    config = opt.get_config()
    json.dumps(config)
    clone = mnemosyne_tf.Mnemosyne.from_config(config)
    self.assertEqual(clone.get_config(), config)
    self.assertEqual(config["weights"], mnemosyne_tf.DEFAULT_WEIGHTS)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    self.assertIsInstance(restored, mnemosyne_tf.Mnemosyne)
    self.assertEqual(restored.get_config(), config)

  def test_save_and_load_mid_training_continues_identically(self):
    x, y = testing.digits(128)
    model = testing.tiny_mlp(seed=4)
    model.compile(mnemosyne_tf.Mnemosyne(),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    path = os.path.join(self.create_tempdir().full_path, "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    self.assertIsInstance(restored.optimizer, mnemosyne_tf.Mnemosyne)
    self.assertEqual(int(restored.optimizer.iterations), int(model.optimizer.iterations))
    for a, b in zip(restored.optimizer.variables, model.optimizer.variables):
      self.assertAllEqual(a, b)
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    restored.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(restored.get_weights(), model.get_weights()):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-7)

  def test_slots_are_created_in_variable_order_with_the_documented_shape(self):
    model = testing.tiny_mlp()
    opt = mnemosyne_tf.Mnemosyne()
    opt.build(model.trainable_variables)
    size = opt.state_floats_per_parameter
    self.assertEqual(size, 27 + 2)  # the CAM state and the step adaptation's 2
    self.assertEqual([tuple(s.shape) for s in opt._states],
                     [(size,) + tuple(v.shape) for v in model.trainable_variables])


if __name__ == "__main__":
  tf.test.main()
