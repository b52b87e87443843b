"""Tests of core/cam.py: the recurrent CAM equals explicit discounted attention."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from mnemosyne_tf.core import cam
from mnemosyne_tf.core import random_features as rf


def explicit_log_weights(q, k, w, tau, kind):
  """log of w_ts = exp(-tau (t - s)) phi(q_t)^T phi(k_s), in float64 numpy.

  phi is computed independently of the library from its definition,
  phi_i(x) = m^-1/2 exp(a_i(x)), in log space so huge keys do not overflow.

  Args: q, k [T, B, d]; w [R, d]; tau [B] (per memory).
  Returns: [T, T, B] log-weights, -inf where s > t.
  """
  def log_phi(x):
    wx = x @ w.T
    a = wx if kind == "softmax" else np.concatenate([wx, -wx], -1)
    a = a - 0.5 * np.sum(x ** 2, -1, keepdims=True)
    return a - 0.5 * np.log(a.shape[-1])
  lq, lk = log_phi(q), log_phi(k)  # [T, B, m]
  steps = q.shape[0]
  out = np.full((steps, steps) + q.shape[1:2], -np.inf)
  for t in range(steps):
    for s in range(t + 1):
      pair = lq[t] + lk[s]  # [B, m]
      top = pair.max(-1)
      out[t, s] = top + np.log(np.exp(pair - top[:, None]).sum(-1)) - tau * (t - s)
  return out


def explicit_attention(q, k, v, w, tau, kind):
  """out_t = sum_{s<=t} w_ts v_s / sum_{s<=t} w_ts ([T, B, d_v])."""
  log_w = explicit_log_weights(q, k, w, tau, kind)  # [T, T, B]
  log_w = log_w - log_w.max(axis=1, keepdims=True)
  weights = np.exp(log_w)
  weights /= weights.sum(axis=1, keepdims=True)
  return np.einsum("tsb,sbv->tbv", weights, v)


def run_cam(q, k, v, w, tau, kind):
  """The library's recurrence over [T, B, d] inputs (core layout: [d, B])."""
  state = cam.init([q.shape[1]], w.shape[0] * (2 if kind == "hyperbolic" else 1),
                   v.shape[-1])
  outs = []
  for t in range(q.shape[0]):
    kf, kc = rf.positive_features(tf.constant(k[t].T, tf.float32), w, kind)
    qf, _ = rf.positive_features(tf.constant(q[t].T, tf.float32), w, kind)
    state = cam.update(state, kf, kc, tf.constant(v[t].T, tf.float32),
                       tf.constant(tau, tf.float32))
    outs.append(cam.read(state, qf).numpy().T)
  return np.stack(outs), state


class CamTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(kind=["softmax", "hyperbolic"], key_scale=[0.5, 30.0])
  def test_recurrent_equals_explicit_discounted_attention(self, kind, key_scale):
    """16 steps, 6 memories with 6 discounts; keys of norm ~1 and ~60.

    Keys of norm ~60 give exponents near -1800: unstabilized features would
    underflow to 0/0. The float32 recurrence must still match the float64
    explicit computation to 1e-4 (relative).
    """
    rng = np.random.RandomState(3)
    steps, batch, dim = 16, 6, 4
    q = rng.randn(steps, batch, dim)
    k = key_scale * rng.randn(steps, batch, dim)
    v = rng.randn(steps, batch, 3)
    tau = np.array([0.0, 0.01, 0.1, 0.5, 1.0, 3.0])
    w = rf.orthogonal_gaussian_projection(4, dim, seed=[1, 1])
    got, state = run_cam(q, k, v, w, tau, kind)
    want = explicit_attention(q, k, v, w.numpy().astype(np.float64), tau, kind)
    self.assertTrue(np.all(np.isfinite(got)))
    self.assertAllClose(got, want, rtol=1e-4, atol=1e-4)
    self.assertTrue(np.all(np.isfinite(state.numerator.numpy())))

  def test_constant_kernel_reads_bias_corrected_ema(self):
    """With k = q = 0 every kernel value is equal: the read-out is the
    discounted average sum_s b^(t-s) v_s / sum_s b^(t-s) (bias-corrected EMA)."""
    w = rf.orthogonal_gaussian_projection(2, 2, seed=[0, 0])
    zeros = tf.zeros([2, 1])
    kf, kc = rf.positive_features(zeros, w, "hyperbolic")
    state = cam.init([1], 4, 1)
    beta, ema, norm = 0.9, 0.0, 0.0
    for value in [1.0, -2.0, 0.5, 4.0, 3.0]:
      state = cam.update(state, kf, kc, tf.constant([[value]]), -np.log(beta))
      ema, norm = beta * ema + value, beta * norm + 1.0
      self.assertAllClose(cam.read(state, kf)[0, 0], ema / norm, rtol=1e-6)

  def test_empty_memory_reads_zero_and_is_finite(self):
    state = cam.init([3, 2], 4, 5)
    self.assertEqual(state.numerator.shape, [4, 5, 3, 2])
    self.assertEqual(state.normalizer.shape, [4, 3, 2])
    self.assertEqual(state.log_scale.shape, [3, 2])
    out = cam.read(state, tf.ones([4, 3, 2]))
    self.assertAllEqual(out, tf.zeros([5, 3, 2]))

  def test_gradients_flow_to_values_keys_and_tau(self):
    w = rf.orthogonal_gaussian_projection(2, 2, seed=[0, 3])
    k = tf.Variable(tf.random.stateless_normal([5, 2, 3], [0, 0]))  # [T, d, B]
    v = tf.Variable(tf.random.stateless_normal([5, 2, 3], [0, 1]))
    tau = tf.Variable(0.3)
    with tf.GradientTape() as tape:
      state = cam.init([3], 4, 2)
      total = 0.0
      for t in range(5):
        kf, kc = rf.positive_features(k[t], w, "hyperbolic")
        state = cam.update(state, kf, kc, v[t], tau)
        total += tf.reduce_sum(cam.read(state, kf) ** 2)
    grads = tape.gradient(total, [k, v, tau])
    for g in grads:
      self.assertTrue(np.all(np.isfinite(g.numpy())))
      self.assertGreater(float(tf.reduce_max(tf.abs(g))), 0.0)


if __name__ == "__main__":
  tf.test.main()
