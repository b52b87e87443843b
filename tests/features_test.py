"""Tests of core/features.py against the formulas computed in NumPy."""

import math

import numpy as np
import tensorflow as tf

from mnemosyne_tf.core import features


class FeaturesTest(tf.test.TestCase):

  def test_log_sign_preprocessing_matches_andrychowicz_formulas(self):
    g = np.array([0.0, 1e-12, -3e-3, 2.0, -50.0, 1e-2], np.float32)
    log_magnitude, sign = features.log_sign_preprocessing(tf.constant(g), k=5.0)
    want_log = np.clip(np.log(np.abs(g.astype(np.float64)) + 1e-20) / 5.0, -1, 1)
    want_sign = np.clip(g.astype(np.float64) * math.exp(5.0), -1, 1)
    self.assertAllClose(log_magnitude, want_log, rtol=1e-5)
    self.assertAllClose(sign, want_sign, rtol=1e-5)
    self.assertAllInRange(log_magnitude, -1.0, 1.0)

  def test_sqrt_zero_safe_has_sqrts_values_and_a_zero_gradient_at_zero(self):
    # 1e-42 is subnormal, which TensorFlow's CPU kernels may flush to 0.
    x = tf.constant([0.0, 1e-42, 1e-30, 0.25, 2.0, 1e30], tf.float32)
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      safe = features.sqrt_zero_safe(x)
      plain = tf.sqrt(x)
    self.assertAllEqual(safe, plain)
    got, want = tape.gradient(safe, x).numpy(), tape.gradient(plain, x).numpy()
    self.assertEqual(got[0], 0.0)
    self.assertTrue(np.isinf(want[0]))  # what it replaces
    self.assertTrue(np.all(np.isfinite(got)))
    self.assertAllEqual(got[2:], want[2:])
    self.assertAllClose(got[2:], 0.5 / np.sqrt(x.numpy()[2:].astype(np.float64)), rtol=1e-6)

  def test_normalized_gradient_differentiates_through_an_underflowed_second_moment(self):
    # The first coordinate's g^2 underflows to 0 in float32, g itself does not.
    # Its feature is then g / eps; d/ds of the features of s * g0 at s = 1,
    # from the formula at t = 1 (v_hat = g^2): 1e-24 / 1e-8 for the first
    # coordinate, and eps / (0.5 + eps)^2 for the second.
    g0 = tf.constant([1e-24, 0.5])
    scale = tf.constant(1.0)

    def d_features(sqrt):
      with tf.GradientTape() as tape:
        tape.watch(scale)
        g = scale * g0
        v = features.update_second_moment(tf.zeros([2]), g, 0.999)
        total = tf.reduce_sum(g / (sqrt(v / (1.0 - 0.999)) + 1e-8))
      return tape.gradient(total, scale)

    want = 1e-24 / 1e-8 + 1e-8 / (0.5 + 1e-8) ** 2
    self.assertFalse(np.isfinite(d_features(tf.sqrt).numpy()))  # the failure it fixes
    self.assertAllClose(d_features(features.sqrt_zero_safe), want, rtol=1e-3)
    with tf.GradientTape() as tape:
      tape.watch(scale)
      g = scale * g0
      total = tf.reduce_sum(features.normalized_gradient(
          g, features.update_second_moment(tf.zeros([2]), g, 0.999), 1, 0.999))
    self.assertAllClose(tape.gradient(total, scale), want, rtol=1e-3)

  def test_normalized_gradient_is_bias_corrected_rms_normalization(self):
    rng = np.random.RandomState(0)
    beta2 = 0.99
    v_tf = tf.zeros([4])
    v_np = np.zeros(4)
    for t in range(1, 8):
      g = (rng.randn(4) * 10.0 ** rng.uniform(-4, 2)).astype(np.float32)
      v_tf = features.update_second_moment(v_tf, tf.constant(g), beta2)
      v_np = beta2 * v_np + (1 - beta2) * g.astype(np.float64) ** 2
      got = features.normalized_gradient(tf.constant(g), v_tf, t, beta2)
      want = g / (np.sqrt(v_np / (1 - beta2 ** t)) + 1e-8)
      self.assertAllClose(got, want, rtol=1e-5)
      if t == 1:
        self.assertAllClose(got, np.sign(g), rtol=1e-5)

  def test_gradient_features_stack_in_documented_order(self):
    g = tf.constant([[0.5, -2.0], [0.0, 1e-3]])
    v = features.update_second_moment(tf.zeros_like(g), g, 0.999)
    x = features.gradient_features(g, v, 1, 0.999)
    self.assertEqual(x.shape, [features.NUM_FEATURES, 2, 2])
    log_magnitude, sign = features.log_sign_preprocessing(g)
    self.assertAllClose(x[0], features.normalized_gradient(g, v, 1, 0.999))
    self.assertAllClose(x[1], log_magnitude)
    self.assertAllClose(x[2], sign)


if __name__ == "__main__":
  tf.test.main()
