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
