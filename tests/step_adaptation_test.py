"""Tests of core/step_adaptation.py and of the coordinate network's use of it."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from mnemosyne_tf.core import network
from mnemosyne_tf.core import step_adaptation
from tests import testing


def log_gains_reference(grads, directions, rate, bound):
  """Independent NumPy recurrence: l_t = clip(l_{t-1} + rate * cos(g_t, d_{t-1}),
  -bound, bound), l_0 = 0, with cos = 0 at t = 1 (no previous direction)."""
  gains, log_gain = [], 0.0
  previous = None
  for g, d in zip(grads, directions):
    g = np.asarray(g, np.float64).ravel()
    cos = 0.0
    if previous is not None:
      cos = g @ previous / (np.linalg.norm(g) * np.linalg.norm(previous))
    log_gain = float(np.clip(log_gain + rate * cos, -bound, bound))
    gains.append(log_gain)
    previous = np.asarray(d, np.float64).ravel()
  return gains


def run(net, theta, grads, param=None):
  param = tf.zeros(grads[0].shape) if param is None else param
  state = net.init_state(param)
  updates = []
  for t, g in enumerate(grads, start=1):
    update, state = net.apply(theta, state, tf.constant(g), param, t)
    updates.append(update.numpy())
  return updates, state


class StepAdaptationTest(tf.test.TestCase, parameterized.TestCase):

  def test_adapt_follows_the_reference_recurrence_and_its_bound(self):
    rng = np.random.RandomState(0)
    # Correlated pairs (the gradient mostly agrees with the last direction,
    # then mostly disagrees) so that the bound is reached both ways.
    directions = [rng.randn(12).astype(np.float32) for _ in range(40)]
    grads = [rng.randn(12).astype(np.float32)]
    for t in range(1, 40):
      sign = 1.0 if t < 25 else -1.0
      grads.append((sign * 2.0 * directions[t - 1] + rng.randn(12)).astype(np.float32))
    rate, bound = 0.3, 1.5
    want = log_gains_reference(grads, directions, rate, bound)
    state = step_adaptation.init(12)
    got = []
    for g, d in zip(grads, directions):
      log_gain = step_adaptation.adapt(state, tf.constant(g), rate, bound)
      got.append(float(log_gain))
      state = step_adaptation.next_state(tf.constant(d), log_gain)
    self.assertAllClose(got, want, atol=1e-5)
    self.assertAlmostEqual(max(want), bound)  # the recurrence did reach both ends
    self.assertAlmostEqual(min(want), -bound)

  def test_exact_sum_does_not_depend_on_the_order_of_its_terms(self):
    rng = np.random.RandomState(5)
    terms = rng.uniform(-1, 1, 100_000).astype(np.float32)
    want = np.sum(np.round(terms.astype(np.float64) * 2.0 ** 30)) / 2.0 ** 30
    got = [float(step_adaptation.exact_sum(tf.constant(t)))
           for t in (terms, terms[::-1], rng.permutation(terms))]
    self.assertEqual(got[0], got[1])
    self.assertEqual(got[0], got[2])
    self.assertEqual(got[0], float(np.float32(want)))
    self.assertAllClose(got[0], np.sum(terms.astype(np.float64)), atol=1e-4)

  def test_agreement_is_the_cosine_for_any_scale(self):
    rng = np.random.RandomState(6)
    for scale in (1e-30, 1.0, 1e30):
      g, d = (scale * rng.randn(1000)).astype(np.float32), rng.randn(1000).astype(np.float32)
      want = g.astype(np.float64) @ d / (np.linalg.norm(g.astype(np.float64))
                                         * np.linalg.norm(d))
      self.assertAllClose(step_adaptation.agreement(tf.constant(g), tf.constant(d)), want,
                          atol=1e-6, msg=scale)

  def test_zero_gradient_or_direction_leaves_the_gain(self):
    state = step_adaptation.AdaptationState(tf.zeros([4]), tf.fill([4], 0.7))
    self.assertAllClose(step_adaptation.adapt(state, tf.ones([4]), 0.5, 3.0), 0.7)
    state = step_adaptation.AdaptationState(tf.ones([4]), tf.fill([4], 0.7))
    self.assertAllClose(step_adaptation.adapt(state, tf.zeros([4]), 0.5, 3.0), 0.7)
    empty = step_adaptation.init(0)
    self.assertAllClose(step_adaptation.adapt(empty, tf.zeros([0]), 0.5, 3.0), 0.0)

  @parameterized.parameters(("rms", 2.0), ("none", 0.0), ("none", 2.0))
  def test_network_update_is_the_plain_update_times_the_gain(self, normalization, magnitude_range):
    """The adapted rule's update is exp(l_t) times the unadapted rule's (same
    theta, same gradients), with l_t from the reference recurrence on the
    plain rule's directions (its update is -d times a positive scale, so d_t is
    -update_t up to scale, which the cosine ignores)."""
    kwargs = dict(output_normalization=normalization, magnitude_range=magnitude_range,
                  gradient_eps=1e-7, odd_in_gradient=True)
    plain = network.CoordinateWiseNetwork(network.CoordinateConfig(**kwargs))
    adapted = network.CoordinateWiseNetwork(network.CoordinateConfig(
        step_adaptation_rate=0.2, step_adaptation_bound=1.0, **kwargs))
    theta = plain.init_theta(seed=2, scale=1.0)
    # A slowly rotating gradient: consecutive ones agree, so the gain moves.
    rng = np.random.RandomState(3)
    base = rng.randn(5, 4)
    grads = [(base + 0.3 * t * rng.randn(5, 4) / 10).astype(np.float32) for t in range(30)]
    want_updates, _ = run(plain, theta, grads)
    got_updates, state = run(adapted, theta, grads)
    gains = log_gains_reference(grads, [-u for u in want_updates], 0.2, 1.0)
    self.assertGreater(max(abs(l) for l in gains), 0.5)
    for t, (got, want, l) in enumerate(zip(got_updates, want_updates, gains)):
      self.assertAllClose(got, np.exp(l) * want, rtol=1e-4, atol=1e-10, msg=f"step {t + 1}")
    self.assertAllClose(state.adaptation.log_gain, np.full([20], gains[-1]), atol=1e-5)

  def test_odd_rule_stays_odd_with_adaptation(self):
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(
        output_normalization="none", gradient_eps=1e-7, odd_in_gradient=True,
        step_adaptation_rate=0.3))
    theta = net.init_theta(seed=3, scale=1.0)
    grads = testing.random_gradients((6, 5), steps=25, seed=7)
    forward, _ = run(net, theta, grads)
    backward, _ = run(net, theta, [-g for g in grads])
    scale = max(float(np.abs(u).max()) for u in forward)
    self.assertGreater(scale, 0.0)
    for a, b in zip(forward, backward):
      self.assertAllClose(a, -b, atol=1e-6 * scale)

  @parameterized.parameters((1e-3, 1.0), (3.0, -1.0))
  def test_gain_grows_when_the_step_is_too_small_and_shrinks_when_too_large(
      self, step_size, direction):
    """On f(x) = |x|^2 / 2 (gradient x), hand-set normalized momentum with a
    step 1e-3 of the distance to the minimum keeps moving downhill (the gain
    rises); with a step 3x the distance it overshoots (the gain falls)."""
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(
        step_adaptation_rate=0.1, step_adaptation_bound=2.0))
    theta = net.hand_set_theta(momentum=0.5, step_size=step_size)
    param = tf.constant(np.random.RandomState(0).randn(8).astype(np.float32))
    param = param / tf.sqrt(tf.reduce_mean(tf.square(param)))  # RMS distance 1
    state = net.init_state(param)
    for t in range(1, 31):
      update, state = net.apply(theta, state, param, param, t)
      param = param + update
    log_gain = float(state.adaptation.log_gain[0])
    self.assertGreater(direction * log_gain, 1.0)

  def test_off_by_default_and_left_out_of_old_config_dicts(self):
    old = network.CoordinateConfig(odd_in_gradient=True)
    self.assertNotIn("step_adaptation_rate", old.to_dict())
    self.assertNotIn("step_adaptation_bound", old.to_dict())
    self.assertEqual(network.CoordinateWiseNetwork(old).init_state(tf.zeros([3])).adaptation, ())
    new = network.CoordinateConfig(step_adaptation_rate=0.05)
    self.assertEqual(network.CoordinateConfig.from_dict(new.to_dict()), new)
    self.assertEqual(network.CoordinateWiseNetwork(new).state_size(),
                     network.CoordinateWiseNetwork(old).state_size() + 2)

  def test_packed_state_round_trips(self):
    net = network.CoordinateWiseNetwork(network.CoordinateConfig(step_adaptation_rate=0.1))
    _, state = run(net, net.hand_set_theta(), testing.random_gradients((3, 2), 4))
    unpacked = net.unpack_state(net.pack_state(state, [3, 2]), [3, 2])
    for a, b in zip(tf.nest.flatten(unpacked), tf.nest.flatten(state)):
      self.assertAllEqual(a, tf.reshape(b, a.shape))

  @parameterized.parameters(
      ("step_adaptation_rate", -0.1), ("step_adaptation_rate", 1.5),
      ("step_adaptation_rate", True), ("step_adaptation_bound", 0.0),
      ("step_adaptation_bound", float("inf")), ("step_adaptation_bound", "3"))
  def test_invalid_config_raises(self, field, value):
    with self.assertRaisesRegex(ValueError, f"CoordinateConfig.{field}"):
      network.CoordinateConfig(**{field: value})


if __name__ == "__main__":
  tf.test.main()
