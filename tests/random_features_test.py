"""Tests of core/random_features.py: FAVOR+ against the exact softmax kernel."""

import math

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from mnemosyne_tf.core import random_features as rf


class ProjectionTest(tf.test.TestCase):

  def test_same_seed_same_projection_other_seed_other(self):
    a = rf.orthogonal_gaussian_projection(10, 4, seed=[1, 2])
    b = rf.orthogonal_gaussian_projection(10, 4, seed=[1, 2])
    c = rf.orthogonal_gaussian_projection(10, 4, seed=[1, 3])
    self.assertAllEqual(a, b)
    self.assertGreater(float(tf.reduce_max(tf.abs(a - c))), 0.1)

  def test_rows_orthogonal_within_each_block(self):
    w = rf.orthogonal_gaussian_projection(12, 4, seed=[0, 0]).numpy()  # 3 blocks
    for block in range(3):
      rows = w[4 * block: 4 * block + 4]
      gram = rows @ rows.T
      off_diagonal = gram - np.diag(np.diag(gram))
      self.assertLess(np.max(np.abs(off_diagonal)), 1e-4)

  def test_row_norms_are_chi_distributed(self):
    # E|w|^2 = d for w ~ N(0, I_d); 6000 rows: standard error ~ 0.6%.
    w = rf.orthogonal_gaussian_projection(6000, 4, seed=[5, 5]).numpy()
    self.assertAllClose(np.mean(np.sum(w ** 2, -1)), 4.0, rtol=0.03)

  def test_invalid_sizes_raise(self):
    with self.assertRaises(ValueError):
      rf.orthogonal_gaussian_projection(0, 4, seed=[0, 0])
    with self.assertRaisesRegex(ValueError, "even"):
      rf.num_projections("hyperbolic", 3)
    with self.assertRaisesRegex(ValueError, "feature kind"):
      rf.num_projections("relu", 4)


class FeatureTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters("softmax", "hyperbolic")
  def test_estimate_approaches_exact_softmax_kernel(self, kind):
    """Mean relative error of phi(x)^T phi(y) vs exp(x^T y) shrinks with m.

    64 pairs with |x|, |y| ~ 0.7 in d = 4. The estimator's standard deviation
    falls like m^-1/2, so at m = 8192 the mean error must be below 3% and each
    16x increase of m must cut it by at least 2x (4x expected).
    """
    rng = np.random.RandomState(0)
    x = (0.35 * rng.randn(64, 4)).astype(np.float32)
    y = (0.35 * rng.randn(64, 4)).astype(np.float32)
    exact = np.exp(np.sum(x * y, -1))
    errors = []
    for m in (32, 512, 8192):
      rows = rf.num_projections(kind, m)
      w = rf.orthogonal_gaussian_projection(rows, 4, seed=[7, m])
      phi_x = rf.unstabilized_features(x.T, w, kind).numpy()  # [m, 64]
      phi_y = rf.unstabilized_features(y.T, w, kind).numpy()
      estimate = np.sum(phi_x * phi_y, 0)
      errors.append(np.mean(np.abs(estimate - exact) / exact))
    self.assertLess(errors[2], 0.03, msg=f"errors {errors}")
    self.assertLess(errors[1], errors[0] / 2, msg=f"errors {errors}")
    self.assertLess(errors[2], errors[1] / 2, msg=f"errors {errors}")

  @parameterized.parameters("softmax", "hyperbolic")
  def test_stabilized_features_equal_unstabilized_times_scale(self, kind):
    rng = np.random.RandomState(1)
    x = rng.randn(4, 5, 3).astype(np.float32)  # [d, ...]
    w = rf.orthogonal_gaussian_projection(4, 4, seed=[0, 1])
    features, log_scale = rf.positive_features(x, w, kind)
    self.assertEqual(features.shape, [4 if kind == "softmax" else 8, 5, 3])
    self.assertAllClose(features * tf.exp(log_scale)[None],
                        rf.unstabilized_features(x, w, kind), rtol=1e-5)

  @parameterized.parameters("softmax", "hyperbolic")
  def test_stabilized_features_finite_for_huge_inputs(self, kind):
    x = tf.transpose(tf.constant([[300.0, -200.0, 50.0, 0.0], [1e4, 1e4, -1e4, 3.0]]))
    w = rf.orthogonal_gaussian_projection(4, 4, seed=[0, 2])
    m = 4 if kind == "softmax" else 8
    features, log_scale = rf.positive_features(x, w, kind)
    self.assertTrue(np.all(np.isfinite(features.numpy())))
    self.assertTrue(np.all(np.isfinite(log_scale.numpy())))
    # The largest feature of every token is exactly m^-1/2.
    self.assertAllClose(tf.reduce_max(features, 0), [1 / math.sqrt(m)] * 2)
    self.assertFalse(np.all(np.isfinite(rf.unstabilized_features(x, w, kind).numpy())
                            & (rf.unstabilized_features(x, w, kind).numpy() > 0)))


if __name__ == "__main__":
  tf.test.main()
