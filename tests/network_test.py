"""Tests of core/network.py: the coordinate-wise learned optimizer."""


import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from mnemosyne_tf.core import features
from mnemosyne_tf.core import network
from tests import testing


def normalized_momentum_reference(grads, momentum, step_size, beta2=0.999, rms=True):
  """Independent NumPy normalized momentum (what hand_set_theta must equal).

  v_t = beta2 v + (1 - beta2) g^2;  n_t = g / (sqrt(v_t / (1 - beta2^t)) + 1e-8)
  m_t = momentum m + (1 - momentum) n_t;  m_hat = m_t / (1 - momentum^t)
  update_t = -step_size * m_hat / rms(m_hat)     (-step_size * m_hat if not rms)
  """
  v = np.zeros_like(grads[0], np.float64)
  m = np.zeros_like(grads[0], np.float64)
  updates = []
  for t, g in enumerate(grads, start=1):
    g = g.astype(np.float64)
    v = beta2 * v + (1 - beta2) * g ** 2
    n = g / (np.sqrt(v / (1 - beta2 ** t)) + 1e-8)
    m = momentum * m + (1 - momentum) * n
    m_hat = m / (1 - momentum ** t)
    updates.append(-step_size * m_hat / (np.sqrt(np.mean(m_hat ** 2)) if rms else 1.0))
  return updates


def xla_meta_gradient(net, theta, starts, gradient_of, steps=3):
  """Second-order meta-gradient, under XLA, of the summed squared norms of
  `starts` (numpy arrays) over `steps` steps of `net`, where the gradient of
  tensor i at p is gradient_of(i, p); {trainable theta name: gradient}."""
  trainable = {k: tf.Variable(v) for k, v in theta.items()
               if not k.endswith(network.FIXED_SUFFIXES)}

  @tf.function(jit_compile=True)
  def meta_gradient():
    with tf.GradientTape() as tape:
      full = dict(theta, **trainable)
      params = [tf.constant(p, tf.float32) for p in starts]
      states = [net.init_state(p) for p in params]
      loss = 0.0
      for t in range(1, steps + 1):
        for i, p in enumerate(params):
          update, states[i] = net.apply(full, states[i], gradient_of(i, p), p, t)
          params[i] = p + update
        loss += sum(tf.reduce_sum(tf.square(p)) for p in params)
    return tape.gradient(loss, trainable)

  return meta_gradient()


def run(net, theta, grads, param=None, learning_rate=1.0, weight_decay=0.0):
  param = tf.zeros(grads[0].shape) if param is None else param
  state = net.init_state(param)
  updates = []
  for t, g in enumerate(grads, start=1):
    update, state = net.apply(theta, state, tf.constant(g), param, t,
                              learning_rate, weight_decay)
    updates.append(update)
  return updates, state


class NetworkTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_hand_set_theta_is_normalized_momentum(self, odd):
    """The hand-set theta is odd already: under odd_in_gradient it is still
    exactly normalized momentum."""
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(odd_in_gradient=odd))
    grads = testing.random_gradients((5, 3), steps=25)
    updates, _ = run(net, net.hand_set_theta(momentum=0.9, step_size=2e-3), grads)
    want = normalized_momentum_reference(grads, 0.9, 2e-3)
    for t, (got, ref) in enumerate(zip(updates, want)):
      self.assertAllClose(got, ref, rtol=2e-4, atol=1e-8, msg=f"step {t + 1}")

  def test_hand_set_theta_without_output_normalization_is_adam_like(self):
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(output_normalization="none"))
    grads = testing.random_gradients((5, 3), steps=25)
    updates, _ = run(net, net.hand_set_theta(momentum=0.9, step_size=2e-3), grads)
    want = normalized_momentum_reference(grads, 0.9, 2e-3, rms=False)
    for t, (got, ref) in enumerate(zip(updates, want)):
      self.assertAllClose(got, ref, rtol=2e-4, atol=1e-9, msg=f"step {t + 1}")
    # Unlike the RMS-normalized rule, its steps shrink when the gradient's sign
    # flips at random (pure noise): |m_hat| falls well below 1.
    noise = [np.sign(np.random.RandomState(t).randn(5, 3)).astype(np.float32)
             for t in range(200)]
    updates, _ = run(net, net.hand_set_theta(momentum=0.9, step_size=2e-3), noise)
    self.assertLess(float(tf.sqrt(tf.reduce_mean(tf.square(updates[-1])))), 0.6 * 2e-3)

  @parameterized.parameters("rms", "none")
  def test_gradient_eps_stills_tensors_without_gradient(self, normalization):
    """With gradient_eps, a zero gradient gives no step and float noise (RMS
    1e-9) a step rms(g) / (rms(g) + eps) times the ungated one; ordinary
    gradients are not affected. Without it, a meta-trained head's biases move a
    zero-gradient tensor by a full step."""
    gated = network.CoordinateWiseNetwork(network.CoordinateConfig(
        output_normalization=normalization, gradient_eps=1e-7))
    plain = network.CoordinateWiseNetwork(network.CoordinateConfig(
        output_normalization=normalization))
    theta = plain.init_theta(seed=4, scale=1.0)
    for scale, gate in ((0.0, 0.0), (1e-9, 1e-9 / (1e-9 + 1e-7)), (1.0, 1.0 / (1.0 + 1e-7))):
      grads = [scale * g / np.sqrt(np.mean(g ** 2))
               for g in testing.random_gradients((6, 4), 3, seed=2)]
      got, _ = run(gated, theta, grads)
      want, _ = run(plain, theta, grads)
      self.assertAllClose(got[-1], gate * want[-1].numpy(), rtol=1e-5, atol=1e-12)
      if scale == 0.0:
        self.assertGreater(float(tf.reduce_max(tf.abs(want[-1]))), 1e-5)
        self.assertAllEqual(got[-1], tf.zeros([6, 4]))

  @parameterized.parameters(("rms", 1), ("none", 1), ("none", 2))
  def test_odd_rule_flips_with_the_gradient(self, normalization, num_layers):
    """With odd_in_gradient, negating a coordinate's whole gradient history
    negates its update, for a random theta (every entry nonzero, the excluded
    ones included); the unconstrained rule with the same theta does not."""
    configs = [network.CoordinateConfig(num_layers=num_layers, output_normalization=normalization,
                                        gradient_eps=1e-7, odd_in_gradient=odd)
               for odd in (True, False)]
    theta = network.CoordinateWiseNetwork(configs[1]).init_theta(seed=3, scale=1.0)
    grads = [g * 10.0 ** -(t % 5) for t, g in
             enumerate(testing.random_gradients((6, 5), steps=30, seed=7))]
    for odd, config in zip((True, False), configs):
      net = network.CoordinateWiseNetwork(config)
      forward, _ = run(net, theta, grads)
      backward, _ = run(net, theta, [-g for g in grads])
      even = [0.5 * (a + b) for a, b in zip(forward, backward)]
      scale = max(float(tf.reduce_max(tf.abs(u))) for u in forward)
      self.assertGreater(scale, 0.0)
      largest_even = max(float(tf.reduce_max(tf.abs(e))) for e in even)
      if odd:
        self.assertLessEqual(largest_even, 1e-6 * scale)
      else:
        self.assertGreater(largest_even, 0.01 * scale)

  @parameterized.parameters(1, 2)
  def test_odd_rule_is_the_odd_part_of_the_constrained_plain_rule(self, num_layers):
    """Independent check of the construction: with the excluded theta entries
    zero (queries and keys from the log magnitude only, values from the odd
    inputs only), the plain network run on g and on -g gives u(g) and u(-g);
    with no output normalization and magnitude_range 0 the odd rule must be
    (u(g) - u(-g)) / 2."""
    kwargs = dict(num_layers=num_layers, output_normalization="none", magnitude_range=0.0)
    plain = network.CoordinateWiseNetwork(network.CoordinateConfig(**kwargs))
    odd = network.CoordinateWiseNetwork(network.CoordinateConfig(odd_in_gradient=True, **kwargs))
    theta = plain.init_theta(seed=5, scale=1.0)
    for l in range(num_layers):
      rows = theta[f"cam{l}/value"].shape[0]
      even = np.zeros([rows, 1, 1], np.float32)
      even[1] = 1.0  # the log magnitude; every other input row is odd
      theta[f"cam{l}/query"] = theta[f"cam{l}/query"] * even
      theta[f"cam{l}/key"] = theta[f"cam{l}/key"] * even
      theta[f"cam{l}/value"] = theta[f"cam{l}/value"] * (1.0 - even)
    grads = testing.random_gradients((4, 6), steps=20, seed=11)
    got, _ = run(odd, theta, grads)
    forward, _ = run(plain, theta, grads)
    backward, _ = run(plain, theta, [-g for g in grads])
    for t, (u, a, b) in enumerate(zip(got, forward, backward)):
      self.assertAllClose(u, 0.5 * (a - b), rtol=1e-5, atol=1e-9, msg=f"step {t + 1}")
    self.assertGreater(float(tf.reduce_max(tf.abs(forward[-1] + backward[-1]))),
                       0.01 * float(tf.reduce_max(tf.abs(forward[-1]))))

  def test_odd_option_is_left_out_of_config_dicts_made_before_it(self):
    self.assertNotIn("odd_in_gradient", network.CoordinateConfig().to_dict())
    c = network.CoordinateConfig(odd_in_gradient=True)
    self.assertTrue(c.to_dict()["odd_in_gradient"])
    self.assertEqual(network.CoordinateConfig.from_dict(c.to_dict()), c)

  @parameterized.parameters(1, 2)
  def test_update_rms_is_bounded_for_extreme_gradients(self, num_layers):
    """Whatever the gradients (1e-30 .. 1e30) and theta, the update's RMS over
    the tensor is learning_rate * exp(log_step_size) times a factor in
    [e^-a, e^a] (a = magnitude_range = 2)."""
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(num_layers=num_layers))
    theta = net.init_theta(seed=1, step_size=1e-2, scale=1.0)
    rng = np.random.RandomState(0)
    grads = [(rng.randn(7, 4) * 10.0 ** rng.uniform(-30, 30)).astype(np.float32)
             for _ in range(150)]
    updates, state = run(net, theta, grads, learning_rate=0.5)
    factors = []
    for update in updates:
      factors.append(float(tf.sqrt(tf.reduce_mean(tf.square(update)))) / (0.5 * 1e-2))
    self.assertBetween(min(factors), np.exp(-2.0) * (1 - 1e-5), np.exp(2.0))
    self.assertBetween(max(factors), np.exp(-2.0), np.exp(2.0) * (1 + 1e-5))
    self.assertGreater(max(factors) / min(factors), 1.01)  # the factor is learned
    for tensor in tf.nest.flatten(state):
      self.assertTrue(np.all(np.isfinite(tensor.numpy())))

  def test_weight_decay_is_decoupled(self):
    net = network.CoordinateWiseNetwork(network.CoordinateConfig())
    theta = net.hand_set_theta()
    param = tf.constant(np.linspace(-1, 1, 12).reshape(3, 4), tf.float32)
    g = testing.random_gradients((3, 4), 1)
    plain, _ = run(net, theta, g, param, learning_rate=0.5)
    decayed, _ = run(net, theta, g, param, learning_rate=0.5, weight_decay=0.1)
    self.assertAllClose(decayed[0] - plain[0], -0.5 * 0.1 * param, rtol=1e-5)

  def test_theta_gradients_are_finite_and_nonzero_under_xla(self):
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(num_layers=2))
    theta = net.init_theta(seed=0, scale=0.5)
    trainable = {k: tf.Variable(v) for k, v in theta.items()
                 if not k.endswith(network.FIXED_SUFFIXES)}
    grads = [tf.constant(g) for g in testing.random_gradients((6,), 6)]

    @tf.function(jit_compile=True)
    def meta_gradient():
      with tf.GradientTape() as tape:
        full = dict(theta, **trainable)
        param = tf.ones([6])
        state = net.init_state(param)
        loss = 0.0
        for t, g in enumerate(grads, start=1):
          update, state = net.apply(full, state, g, param, t)
          param = param + update
          loss += tf.reduce_sum(tf.square(param - 0.5))
      return tape.gradient(loss, trainable)

    for name, g in meta_gradient().items():
      self.assertTrue(np.all(np.isfinite(g.numpy())), msg=name)
      self.assertGreater(float(tf.reduce_max(tf.abs(g))), 0.0, msg=name)

  def test_meta_gradient_stays_finite_when_gradients_underflow_when_squared(self):
    # A second-order meta-gradient differentiates through g. One tensor has a
    # coordinate whose gradient is exactly 0 and one whose g^2 underflows
    # (second moment 0, g not 0); in another every coordinate's does
    # (rms(g) = 0). With tf.sqrt in their place the
    # meta-gradient is non-finite (attempt 20's dropped CNN steps).
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(
        output_normalization="none", gradient_eps=1e-7, odd_in_gradient=True,
        step_adaptation_rate=0.03))
    theta = net.init_theta(seed=0, scale=0.5)
    trainable = {k: tf.Variable(v) for k, v in theta.items()
                 if not k.endswith(network.FIXED_SUFFIXES)}
    base = [np.array([1e-24, 0.0, -0.2, 0.5], np.float32),
            np.array([1e-24, -2e-24, 3e-25], np.float32)]

    def meta_gradient():
      with tf.GradientTape() as tape:
        full = dict(theta, **trainable)
        params = [tf.ones([4]), tf.ones([3])]
        states = [net.init_state(p) for p in params]
        loss = 0.0
        for t in range(1, 4):
          for i, (p, g0) in enumerate(zip(params, base)):
            g = g0 * p  # depends on theta from the second step on
            update, states[i] = net.apply(full, states[i], g, p, t)
            params[i] = p + update
          loss += sum(tf.reduce_sum(tf.square(p - 0.5)) for p in params)
      return tape.gradient(loss, trainable)

    def finite(gradient):
      return all(np.all(np.isfinite(g.numpy())) for g in gradient.values())

    self.assertTrue(finite(tf.function(meta_gradient, jit_compile=True)()))
    self.assertTrue(finite(meta_gradient()))
    safe = features.sqrt_zero_safe
    features.sqrt_zero_safe = tf.sqrt
    try:
      self.assertFalse(finite(meta_gradient()))
    finally:
      features.sqrt_zero_safe = safe

  def test_relative_update_bound_against_numpy(self):
    # rms(update) <= r * max(rms(param), floor) for rank >= 2, computed
    # independently in numpy; the direction is kept; within the bound, and for
    # vectors, the update is untouched.
    rng = np.random.default_rng(0)
    r, floor = 0.02, 0.01
    cases = [(rng.normal(0, 0.1, [6, 5]), rng.normal(0, 0.01, 30)),   # binds
             (rng.normal(0, 0.1, [6, 5]), rng.normal(0, 1e-4, 30)),   # within
             (np.zeros([6, 5]), rng.normal(0, 0.01, 30)),             # floor
             (rng.normal(0, 1.0, [2, 3, 4]), np.zeros(24)),           # zero update
             (rng.normal(0, 0.1, [7]), rng.normal(0, 0.01, 7))]       # vector
    for param, update in cases:
      got = network.bound_relative_update(
          tf.constant(update, tf.float32), tf.constant(param, tf.float32), r, floor).numpy()
      rms = lambda x: np.sqrt(np.mean(np.square(x)))
      limit = r * max(rms(param), floor)
      expected = (update * min(1.0, limit / rms(update))
                  if param.ndim >= 2 and rms(update) > limit else update)
      self.assertAllClose(got, expected, rtol=1e-5, atol=1e-12)
      if param.ndim >= 2:
        self.assertLessEqual(rms(got), limit * (1 + 1e-5))
    with self.assertRaisesRegex(ValueError, "known rank"):
      network.bound_relative_update(tf.zeros([3]), tf.TensorSpec(None), r, floor)
    # The first case did bind, the second did not.
    first = network.bound_relative_update(tf.constant(cases[0][1], tf.float32),
                                          tf.constant(cases[0][0], tf.float32), r, floor)
    self.assertLess(float(tf.norm(first)), 0.9 * np.linalg.norm(cases[0][1]))

  def test_relative_update_bound_of_one_rank(self):
    # With rank k only tensors of rank exactly k are bounded (as with rank 0
    # for rank >= 2); the others' updates are returned unchanged.
    rng = np.random.default_rng(5)
    r, floor = 0.02, 0.01
    update = tf.constant(rng.normal(0, 0.05, 60), tf.float32)
    for shape in ([60], [6, 10], [3, 4, 5], [1, 3, 4, 5]):
      param = tf.constant(rng.normal(0, 0.1, shape), tf.float32)
      every = network.bound_relative_update(update, param, r, floor).numpy()
      only_3 = network.bound_relative_update(update, param, r, floor, rank=3).numpy()
      self.assertAllClose(only_3, every if len(shape) == 3 else update.numpy(), msg=shape)
      if len(shape) >= 2:  # the bound binds for every kernel here
        self.assertLess(np.linalg.norm(every), 0.9 * np.linalg.norm(update.numpy()))

  def test_relative_update_bound_in_apply(self):
    # The network with the bound gives the unbounded update scaled to the
    # bound (kernels) or the same update (vectors); the state is the same.
    kwargs = dict(output_normalization="none", gradient_eps=1e-7, odd_in_gradient=True,
                  step_adaptation_rate=0.03)
    free = network.CoordinateWiseNetwork(network.CoordinateConfig(**kwargs))
    bounded = network.CoordinateWiseNetwork(network.CoordinateConfig(
        max_relative_update=0.001, **kwargs))
    theta = free.hand_set_theta(step_size=0.05)
    for shape in ([4, 5], [20]):
      param = tf.constant(np.random.default_rng(1).normal(0, 0.5, shape), tf.float32)
      state_free = free.init_state(param)
      state_bounded = bounded.init_state(param)
      for t, g in enumerate(testing.random_gradients(shape, 3), start=1):
        u_free, state_free = free.apply(theta, state_free, g, param, t)
        u_bounded, state_bounded = bounded.apply(theta, state_bounded, g, param, t)
        limit = 0.001 * float(tf.sqrt(tf.reduce_mean(tf.square(param))))
        rms_free = float(tf.sqrt(tf.reduce_mean(tf.square(u_free))))
        if len(shape) >= 2:
          self.assertGreater(rms_free, limit)  # the bound binds here
          self.assertAllClose(u_bounded, u_free * (limit / rms_free), rtol=1e-4)
        else:
          self.assertAllClose(u_bounded, u_free)
        tf.nest.map_structure(self.assertAllClose, state_bounded, state_free)

  def test_meta_gradient_through_the_relative_update_bound_is_finite(self):
    # Second order, under XLA, with one kernel whose step the bound cuts and
    # one (a larger kernel, a smaller gradient) that it leaves alone; the
    # learned step size gets a gradient only through the unbounded one.
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(
        output_normalization="none", gradient_eps=1e-7, odd_in_gradient=True,
        step_adaptation_rate=0.03, max_relative_update=0.02))
    theta = net.hand_set_theta(step_size=0.05)
    rng = np.random.default_rng(3)
    starts = [rng.normal(0, 0.1, [4, 3]), rng.normal(0, 30.0, [3, 2])]
    # Gradients of quadratics.
    gradient = xla_meta_gradient(net, theta, starts,
                                 lambda i, p: 0.5 * p if i == 0 else 1e-3 * p)
    for name, g in gradient.items():
      self.assertTrue(np.all(np.isfinite(g.numpy())), msg=name)
    self.assertNotEqual(float(gradient["log_step_size"]), 0.0)

  def test_relative_update_rank_in_apply_and_the_default_weights(self):
    # coordinate_v24 is coordinate_v15 with rank-3 kernels' steps bounded:
    # on tensors of rank 2 and 4 the two give the same updates and states;
    # on a rank-3 tensor whose free step exceeds the bound, v24's update is
    # v15's scaled down to it.
    from mnemosyne_tf import rule as rule_lib
    from mnemosyne_tf import weights as weights_lib
    v15, v24 = (weights_lib.load_weights(n) for n in ("coordinate_v15", "coordinate_v24"))
    self.assertEqual(v15.sha256, v24.sha256)  # the same arrays
    self.assertEqual(v24.config["relative_update_rank"], 3)
    nets = [rule_lib.build_network(w.network, w.config) for w in (v15, v24)]
    theta = {k: tf.constant(v) for k, v in v15.theta.items()}
    rng = np.random.default_rng(6)
    for shape in ([6, 5], [2, 3, 4], [3, 3, 2, 4]):
      param = tf.constant(rng.normal(0, 0.01, shape), tf.float32)
      states = [net.init_state(param) for net in nets]
      for t, g in enumerate(testing.random_gradients(shape, 3), start=1):
        (u15, states[0]), (u24, states[1]) = (
            net.apply(theta, state, g, param, t) for net, state in zip(nets, states))
        tf.nest.map_structure(self.assertAllClose, states[1], states[0])
        if len(shape) != 3:
          self.assertAllEqual(u24, u15)
          continue
        rms = lambda x: float(tf.sqrt(tf.reduce_mean(tf.square(x))))
        limit = 0.01 * max(rms(param), 0.01)
        self.assertGreater(rms(u15), limit)  # the bound binds on this kernel
        self.assertAllClose(u24, u15 * (limit / rms(u15)), rtol=1e-4)

  def test_relative_update_bound_is_left_out_of_old_config_dicts(self):
    # Weights made before the option keep their config dicts (and checksums of
    # caches keyed by them).
    self.assertNotIn("max_relative_update", network.CoordinateConfig().to_dict())
    self.assertNotIn("relative_update_floor", network.CoordinateConfig().to_dict())
    self.assertNotIn("relative_update_rank", network.CoordinateConfig().to_dict())
    ranked = network.CoordinateConfig(max_relative_update=0.02, relative_update_rank=3)
    self.assertEqual(network.CoordinateConfig.from_dict(ranked.to_dict()), ranked)
    bounded = network.CoordinateConfig(max_relative_update=0.02)
    self.assertEqual(network.CoordinateConfig.from_dict(bounded.to_dict()), bounded)

  def test_early_boost_multiplier_and_its_layout_exemption(self):
    # 1 + (b - 1) * max(0, 1 - t / s), checked against the formula written out
    # by hand at a few steps; 1.0 for a model with a tensor of the exempt rank,
    # for every model with unless_rank 0 never, and with the boost off.
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(
        early_boost=4.0, early_boost_steps=400))
    mlp = [(64, 32), (32,), (32, 10), (10,)]
    for step, expected in ((1, 1 + 3 * 399 / 400), (200, 2.5), (399, 1 + 3 / 400),
                           (400, 1.0), (5000, 1.0)):
      self.assertAllClose(net.step_multiplier(tf.constant(float(step)), mlp), expected,
                          rtol=1e-6, msg=step)
    attention = mlp + [(32, 2, 16)]
    self.assertEqual(net.step_multiplier(tf.constant(1.0), attention), 1.0)
    every = network.CoordinateWiseNetwork(network.CoordinateConfig(
        early_boost=4.0, early_boost_steps=400, early_boost_exempt_rank=0))
    self.assertAllClose(every.step_multiplier(tf.constant(200.0), attention), 2.5)
    conv_exempt = network.CoordinateWiseNetwork(network.CoordinateConfig(
        early_boost=4.0, early_boost_steps=400, early_boost_exempt_rank=4))
    self.assertAllClose(conv_exempt.step_multiplier(tf.constant(200.0), attention), 2.5)
    self.assertEqual(conv_exempt.step_multiplier(tf.constant(200.0), [(3, 3, 1, 8)]), 1.0)
    off = network.CoordinateWiseNetwork(network.CoordinateConfig())
    self.assertEqual(off.step_multiplier(tf.constant(1.0), mlp), 1.0)

  @parameterized.parameters(
      (dict(early_boost=0.5, early_boost_steps=10), "early_boost must be a float in"),
      (dict(early_boost=True, early_boost_steps=10), "early_boost must be a float in"),
      (dict(early_boost=4.0), "early_boost_steps must be an integer >= 1"),
      (dict(early_boost=4.0, early_boost_steps=2.5), "early_boost_steps must be an integer"),
      (dict(early_boost=4.0, early_boost_steps=10, early_boost_exempt_rank=9),
       "early_boost_exempt_rank must be 0"),
  )
  def test_early_boost_config_errors(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      network.CoordinateConfig(**kwargs)

  def test_early_boost_is_left_out_of_old_config_dicts_and_round_trips(self):
    plain = network.CoordinateConfig().to_dict()
    for name in ("early_boost", "early_boost_steps", "early_boost_exempt_rank"):
      self.assertNotIn(name, plain)
    boosted = network.CoordinateConfig(early_boost=4.0, early_boost_steps=400)
    self.assertEqual(network.CoordinateConfig.from_dict(boosted.to_dict()), boosted)
    # With the boost on, the exemption is written even at its default: what
    # a file means must not depend on the code's default.
    self.assertEqual(boosted.to_dict()["early_boost_exempt_rank"], 3)
    self.assertFalse(network.CoordinateWiseNetwork(network.CoordinateConfig()).has_step_schedule)
    self.assertTrue(network.CoordinateWiseNetwork(boosted).has_step_schedule)

  def test_xla_and_eager_apply_agree(self):
    net = network.CoordinateWiseNetwork(network.CoordinateConfig())
    theta = net.init_theta(seed=2, scale=1.0)
    param = tf.zeros([4, 5])
    state = net.init_state(param)
    compiled = tf.function(net.apply, jit_compile=True)
    eager_state = xla_state = state
    for t, g in enumerate(testing.random_gradients((4, 5), 10), start=1):
      eager_update, eager_state = net.apply(theta, eager_state, g, param, t)
      xla_update, xla_state = compiled(theta, xla_state, g, param, t)
      self.assertAllClose(eager_update, xla_update, rtol=1e-5, atol=1e-9)

  def test_pack_unpack_round_trip(self):
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(num_layers=2))
    param = tf.zeros([3, 2])
    _, state = run(net, net.init_theta(seed=3), testing.random_gradients((3, 2), 4))
    packed = net.pack_state(state, [3, 2])
    self.assertEqual(packed.shape, [net.state_size(), 3, 2])
    for a, b in zip(tf.nest.flatten(net.unpack_state(packed, [3, 2])), tf.nest.flatten(state)):
      self.assertAllEqual(a, b)
    self.assertEqual(net.pack_state(net.init_state(param), [3, 2]).shape[0],
                     net.state_size())

  def test_state_size_formula(self):
    c = network.CoordinateConfig(num_layers=2, num_heads=3, num_features=6, value_dim=4)
    self.assertEqual(network.CoordinateWiseNetwork(c).state_size(),
                     1 + 2 * 3 * (6 * 4 + 6 + 1))

  def test_guarded_apply_skips_non_finite_gradients(self):
    net = network.CoordinateWiseNetwork(network.CoordinateConfig())
    theta = net.hand_set_theta()
    param = tf.ones([2, 3])
    _, state = run(net, theta, testing.random_gradients((2, 3), 3), param)
    for bad in (np.nan, np.inf, -np.inf):
      g = np.ones([2, 3], np.float32)
      g[1, 2] = bad
      update, new_state = net.guarded_apply(theta, state, tf.constant(g), param, 4,
                                            weight_decay=0.1)
      self.assertAllEqual(update, tf.zeros([2, 3]))
      for a, b in zip(tf.nest.flatten(new_state), tf.nest.flatten(state)):
        self.assertAllEqual(a, b)
    update, _ = net.guarded_apply(theta, state, tf.ones([2, 3]), param, 4)
    self.assertGreater(float(tf.reduce_max(tf.abs(update))), 0.0)

  @parameterized.parameters(
      ("num_layers", 0), ("num_heads", -1), ("key_dim", 1.5), ("value_dim", True),
      ("num_features", 3), ("feature_kind", "relu"), ("beta2", 1.0),
      ("preprocessing_k", 0.0), ("hidden_dim", "8"), ("magnitude_range", -1.0),
      ("output_normalization", "l2"), ("gradient_eps", -1e-8), ("odd_in_gradient", 1),
      ("max_relative_update", -0.1), ("max_relative_update", 2.0),
      ("max_relative_update", True), ("relative_update_floor", 0.0),
      ("relative_update_rank", 1), ("relative_update_rank", 9), ("relative_update_rank", 3.0),
      ("relative_update_rank", True))
  def test_invalid_config_raises(self, field, value):
    expected = {"num_features": "even", "feature_kind": "feature kind"}.get(field, field)
    with self.assertRaisesRegex(ValueError, expected):
      network.CoordinateConfig(**{field: value})

  def test_config_round_trip_and_unknown_fields(self):
    c = network.CoordinateConfig(num_heads=3, hidden_dim=8)
    self.assertEqual(network.CoordinateConfig.from_dict(c.to_dict()), c)
    with self.assertRaisesRegex(ValueError, "unknown CoordinateConfig fields"):
      network.CoordinateConfig.from_dict(dict(c.to_dict(), bogus=1))

  def test_check_theta_names_the_mismatch(self):
    net = network.CoordinateWiseNetwork(network.CoordinateConfig())
    theta = net.hand_set_theta()
    theta["head/w1"] = tf.zeros([2, 2])
    with self.assertRaisesRegex(ValueError, r"head/w1.*\(2, 2\)"):
      net.check_theta(theta, "my file")
    del theta["head/b1"]
    with self.assertRaisesRegex(ValueError, "missing.*head/b1"):
      net.check_theta(theta)


if __name__ == "__main__":
  tf.test.main()
