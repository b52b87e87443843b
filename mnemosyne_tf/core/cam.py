"""Compact Associative Memory (CAM): Mnemosyne's temporal encoder.

Mnemosyne (arXiv 2302.01128, Sec. 3.1) keeps, for every memory, the discounted
softmax-kernel attention over the whole history in O(1) space:

    N_t   = exp(-tau) N_{t-1}   + phi(k_t) v_t^T          [m, d_v]
    Psi_t = exp(-tau) Psi_{t-1} + phi(k_t)                [m]
    out_t = N_t^T phi(q_t) / (phi(q_t)^T Psi_t)           [d_v]

which equals sum_s w_ts v_s / sum_s w_ts with w_ts = exp(-tau (t - s)) phi(q_t)^T phi(k_s),
s <= t: causal, discounted kernel attention over every past token.

Numerical safety. N and Psi are stored scaled by exp(-M_t), where M_t is a running
log-scale (the online-softmax trick): with per-token stabilized key features
phi~(k_t) = phi(k_t) exp(-c_t) (see `random_features.positive_features`),

    M_t   = max(M_{t-1} - tau, c_t)
    N~_t  = exp(M_{t-1} - tau - M_t) N~_{t-1} + exp(c_t - M_t) phi~(k_t) v_t^T

and likewise for Psi~. Both exponents are <= 0, so nothing overflows whatever the
keys, and the common factor exp(M_t) cancels exactly in the read-out. (A max over
the whole history would not be computable online; a per-token max on keys alone
would change the attention weights.) The read-out divides by max(den, eps).

A state holds a batch of independent memories: all tensors share trailing batch
dims [...] (e.g. [num_heads, num_params]) after their feature axes, the layout
of `random_features` (the batch is the minor, vectorized axis). tau broadcasts
against [...].
"""

from typing import NamedTuple

import tensorflow as tf

# Initial log-scale of an empty memory: below any reachable c_t, finite so that
# differences stay NaN-free.
EMPTY_LOG_SCALE = -1e4


class CamState(NamedTuple):
  """One batch of memories.

  Attributes:
    numerator: [m, d_v, ...], N~ = N exp(-M).
    normalizer: [m, ...], Psi~ = Psi exp(-M).
    log_scale: [...], M.
  """
  numerator: tf.Tensor
  normalizer: tf.Tensor
  log_scale: tf.Tensor


def init(batch_shape, num_features: int, value_dim: int,
         dtype=tf.float32) -> CamState:
  """An empty memory for each element of `batch_shape`."""
  batch_shape = list(batch_shape)
  return CamState(
      numerator=tf.zeros([num_features, value_dim] + batch_shape, dtype),
      normalizer=tf.zeros([num_features] + batch_shape, dtype),
      log_scale=tf.fill(batch_shape, tf.constant(EMPTY_LOG_SCALE, dtype)),
  )


def update(state: CamState, key_features: tf.Tensor, key_log_scale: tf.Tensor,
           values: tf.Tensor, tau) -> CamState:
  """Writes one token into every memory, discounting the past by exp(-tau).

  Args:
    state: the memories before this token.
    key_features: [m, ...] stabilized key features phi~(k_t).
    key_log_scale: [...] their log-scale c_t (phi = phi~ exp(c_t)).
    values: [d_v, ...] values v_t.
    tau: discount rate(s) >= 0, broadcastable to [...].

  Returns:
    The memories after the token.
  """
  decayed = state.log_scale - tau  # [...]
  log_scale = tf.stop_gradient(tf.maximum(decayed, key_log_scale))  # [...]
  keep = tf.exp(decayed - log_scale)  # [...]
  write = tf.exp(key_log_scale - log_scale) * key_features  # [m, ...]
  numerator = (keep * state.numerator
               + write[:, None] * values[None, :])  # [m, d_v, ...]
  normalizer = keep * state.normalizer + write  # [m, ...]
  return CamState(numerator, normalizer, log_scale)


def read(state: CamState, query_features: tf.Tensor, eps: float = 1e-12) -> tf.Tensor:
  """Attention read-out N^T phi(q) / phi(q)^T Psi for every memory.

  Args:
    state: the memories.
    query_features: [m, ...] query features phi(q_t) (any positive scale: it
      cancels).
    eps: floor of the denominator; an empty or vanishing memory reads ~0.

  Returns:
    [d_v, ...] read-out.
  """
  numerator = tf.reduce_sum(query_features[:, None] * state.numerator, axis=0)  # [d_v, ...]
  denominator = tf.reduce_sum(query_features * state.normalizer, axis=0)  # [...]
  return numerator / tf.maximum(denominator, eps)
