"""Tensor-wise Mnemosyne network (core): constant state, descent, XLA, errors."""

import numpy as np
import tensorflow as tf

from mnemosyne_tf.core import tensor_network


class TensorWiseNetworkTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.net = tensor_network.TensorWiseNetwork(tensor_network.TensorConfig(chunk=16))
    self.theta = self.net.init_theta(seed=0)
    self.net.check_theta(self.theta)

  def test_state_does_not_grow_with_tensor_size_or_steps(self):
    sizes = set()
    for n in (1, 7, 1000, 100_003):
      param = tf.zeros([n])
      state = self.net.init_state(param)
      for t in range(1, 4):
        grad = tf.random.stateless_normal([n], [n, t])
        _, state = self.net.apply(self.theta, state, grad, param, t)
      sizes.add(sum(int(np.prod(leaf.shape)) for leaf in tf.nest.flatten(state)))
    c = self.net.config
    per_tensor = c.num_heads * c.max_tokens * (c.num_features * (c.value_dim + 1) + 1)
    self.assertEqual(sizes, {per_tensor})
    self.assertEqual({self.net.state_floats([n]) for n in (1, 7, 1000, 100_003)},
                     {per_tensor})

  def test_slot_is_flat_and_round_trips(self):
    param = tf.zeros([30, 20])
    _, state = self.net.apply(self.theta, self.net.init_state(param),
                              tf.random.stateless_normal([30, 20], [7, 7]), param, 1)
    packed = self.net.pack_state(state, [30, 20])
    self.assertEqual(packed.shape, self.net.slot_shape([30, 20]))
    self.assertEqual(len(packed.shape), 1)
    for a, b in zip(tf.nest.flatten(self.net.unpack_state(packed, [30, 20])),
                    tf.nest.flatten(state)):
      self.assertAllEqual(a, b)
    with self.assertRaisesRegex(ValueError, "per tensor"):
      self.net.state_size()

  def test_update_descends_and_has_the_learned_rms(self):
    grad = tf.random.stateless_normal([40, 30], [1, 2])
    param = tf.zeros([40, 30])
    update, _ = self.net.apply(self.theta, self.net.init_state(param), grad, param, 1)
    self.assertLess(float(tf.reduce_sum(update * grad)), 0.0)
    rms = float(tf.sqrt(tf.reduce_mean(tf.square(update))))
    # exp(log_step) * exp(a * tanh(mean s)), with |log factor| <= a = 2.
    self.assertBetween(rms, 1e-3 * np.exp(-2.0) * 0.999, 1e-3 * np.exp(2.0) * 1.001)

  def test_trains_a_quadratic(self):
    target = tf.random.stateless_normal([500], [3, 4])
    param = tf.zeros([500])
    state = self.net.init_state(param)
    theta = dict(self.theta, log_step_size=tf.constant(np.log(0.05), tf.float32))
    start = float(tf.reduce_sum(tf.square(param - target)))
    for t in range(1, 101):
      update, state = self.net.apply(theta, state, 2.0 * (param - target), param, t)
      param = param + update
    self.assertLess(float(tf.reduce_sum(tf.square(param - target))), 0.1 * start)

  def test_xla_compiles_and_matches_eager(self):
    param = tf.zeros([300])
    grad = tf.random.stateless_normal([300], [5, 6])
    state = self.net.init_state(param)
    eager = self.net.apply(self.theta, state, grad, param, 1)
    compiled = tf.function(lambda s, g: self.net.apply(self.theta, s, g, param, 1),
                           jit_compile=True)(state, grad)
    self.assertAllClose(eager[0], compiled[0], rtol=1e-4, atol=1e-8)

  def test_grouped_head_equals_the_whole_tensor_at_once(self):
    """The per-coordinate head in groups (as for huge tensors) gives the update
    of a network whose one group holds the whole tensor."""
    grouped = tensor_network.TensorWiseNetwork(
        tensor_network.TensorConfig(chunk=4, group_chunks=5))  # groups of 20
    whole = tensor_network.TensorWiseNetwork(
        tensor_network.TensorConfig(chunk=4, group_chunks=1000))
    theta = grouped.init_theta(seed=1)
    for n in (20, 47, 100):  # one group; groups + a partial one; full groups only
      param = tf.zeros([n])
      grad = tf.random.stateless_normal([n], [n, 1])
      a, _ = grouped.apply(theta, grouped.init_state(param), grad, param, 1)
      b, _ = whole.apply(theta, whole.init_state(param), grad, param, 1)
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-9, msg=n)
    columns = tf.reshape(tf.range(2 * 47, dtype=tf.float32), [2, 47])
    self.assertAllEqual(tensor_network.map_column_groups(lambda t: 2.0 * t, columns, 20),
                        2.0 * columns)

  def test_gradient_eps_stills_a_tensor_without_gradient(self):
    gated = tensor_network.TensorWiseNetwork(
        tensor_network.TensorConfig(chunk=16, gradient_eps=1e-7))
    param = tf.zeros([50])
    plain_update, _ = self.net.apply(self.theta, self.net.init_state(param), tf.zeros([50]),
                                     param, 1)
    update, _ = gated.apply(self.theta, gated.init_state(param), tf.zeros([50]), param, 1)
    self.assertGreater(float(tf.reduce_max(tf.abs(plain_update))), 0.0)  # the flaw it fixes
    self.assertAllEqual(update, tf.zeros([50]))

  def test_invalid_sizes_raise_value_error(self):
    for kwargs, message in (({"num_features": 3}, "num_features"),
                            ({"num_heads": 0}, "num_heads"),
                            ({"chunk": 1}, "chunk"),
                            ({"magnitude_range": 11.0}, "magnitude_range"),
                            ({"gradient_eps": -1.0}, "gradient_eps")):
      with self.assertRaisesRegex(ValueError, message, msg=kwargs):
        tensor_network.TensorConfig(**kwargs)


if __name__ == "__main__":
  tf.test.main()
