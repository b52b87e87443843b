"""Bidirectional FAVOR+ attention against exact softmax attention."""

import numpy as np
import tensorflow as tf

from mnemosyne_tf.core import performer
from mnemosyne_tf.core import random_features


def _inputs(seed, d=4, length=9, batch=3, scale=0.5):
  rng = np.random.RandomState(seed)
  q = tf.constant(rng.randn(d, length, batch) * scale, tf.float64)
  k = tf.constant(rng.randn(d, length, batch) * scale, tf.float64)
  v = tf.constant(rng.randn(2, length, batch), tf.float64)
  lengths = np.array([length, length - 3, 2])[:batch]
  mask = tf.constant((np.arange(length)[:, None] < lengths[None]).astype(np.float64))
  return q, k, v, mask


class FavorAttentionTest(tf.test.TestCase):

  def test_exact_reference_is_softmax_over_real_tokens(self):
    q, k, v, mask = _inputs(0)
    out = performer.exact_softmax_attention(q, k, v, mask).numpy()
    qn, kn, vn, mn = (t.numpy() for t in (q, k, v, mask))
    for b in range(3):
      real = mn[:, b] > 0
      logits = qn[:, :, b].T @ kn[:, real, b]  # [L, real]
      w = np.exp(logits - logits.max(1, keepdims=True))
      w /= w.sum(1, keepdims=True)
      self.assertAllClose(out[:, :, b], (w @ vn[:, real, b].T).T)

  def test_error_against_exact_softmax_shrinks_as_features_grow(self):
    """Mean absolute error over 5 projections: stated tolerance 0.03 at m = 4096
    (measured about 0.013), and at least 4x below the m = 16 error."""
    for kind in ("softmax", "hyperbolic"):
      q, k, v, mask = _inputs(1)
      exact = performer.exact_softmax_attention(q, k, v, mask)
      errors = {}
      for m in (16, 256, 4096):
        rows = random_features.num_projections(kind, m)
        errors[m] = np.mean([float(tf.reduce_mean(tf.abs(performer.favor_attention(
            q, k, v, random_features.orthogonal_gaussian_projection(
                rows, 4, [s, 7], dtype=tf.float64), mask, kind) - exact)))
            for s in range(5)])
      self.assertLess(errors[4096], 0.03, msg=(kind, errors))
      self.assertLess(errors[4096] * 4, errors[16], msg=(kind, errors))
      self.assertLess(errors[256], errors[16], msg=(kind, errors))

  def test_padding_is_never_attended_to(self):
    q, k, v, mask = _inputs(2)
    projection = random_features.orthogonal_gaussian_projection(64, 4, [0, 1], tf.float64)
    out = performer.favor_attention(q, k, v, projection, mask)
    pad = 1.0 - mask
    garbage_k = k + 50.0 * pad[None]  # huge padded keys and values change nothing
    garbage_v = v + 1e6 * pad[None]
    again = performer.favor_attention(q, garbage_k, garbage_v, projection, mask)
    self.assertAllClose(out * mask[None], again * mask[None])

  def test_large_norms_do_not_overflow_and_xla_matches(self):
    q, k, v, mask = _inputs(3, scale=30.0)
    q, k, v, mask = (tf.cast(t, tf.float32) for t in (q, k, v, mask))
    projection = random_features.orthogonal_gaussian_projection(32, 4, [0, 2])
    eager = performer.favor_attention(q, k, v, projection, mask)
    self.assertTrue(np.all(np.isfinite(eager.numpy())))
    compiled = tf.function(performer.favor_attention, jit_compile=True)(
        q, k, v, projection, mask)
    self.assertAllClose(eager, compiled, rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
  tf.test.main()
