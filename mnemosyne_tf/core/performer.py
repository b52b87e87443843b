"""Bidirectional (non-causal) Performer attention and encoder blocks.

The tensor-wise mode's Hierarchical Pooling Encoder (DESIGN §2) encodes chunks
of a tensor's per-coordinate tokens with a bidirectional Performer: FAVOR+
attention (Choromanski et al. 2021), linear in the chunk length,

    out_i = sum_j phi(q_i)^T phi(k_j) v_j / sum_j phi(q_i)^T phi(k_j)

which estimates softmax attention, softmax_j(q_i^T k_j), without forming the
L x L matrix. Padding tokens (mask 0) are never attended to.

Layout as in `random_features.py`: the feature axis leads, tokens come next and
the batch trails (x is [d, L, ...]), so the elementwise work vectorizes over the
batch. Pure functions of (theta, inputs); static shapes (XLA, TPU).

Numerical safety: keys share one log-scale per sequence (the max of their
per-token exponents over the sequence: every key exists at once in a
bidirectional encoder, unlike the CAM's stream), queries keep their own (it
cancels between numerator and denominator).
"""

import math

import tensorflow as tf

from mnemosyne_tf.core import random_features


def favor_attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, projection: tf.Tensor,
                    mask: tf.Tensor = None, kind: str = "softmax",
                    eps: float = 1e-12) -> tf.Tensor:
  """Bidirectional FAVOR+ attention.

  Args:
    q, k: [d, L, ...] queries and keys (already scaled: the kernel is exp(q^T k)).
    v: [d_v, L, ...] values.
    projection: [R, d] fixed projection (random_features.orthogonal_gaussian_projection).
    mask: [L, ...] 1 for real tokens, 0 for padding (None: all real).
    kind: "softmax" or "hyperbolic" features.
    eps: floor of the denominator.

  Returns:
    [d_v, L, ...] attention outputs (padding positions hold an average of the
    real tokens' values, like any query).
  """
  q_features, _ = random_features.positive_features(q, projection, kind)  # [m, L, ...]
  k_exponents = random_features.feature_exponents(k, projection, kind)  # [m, L, ...]
  if mask is not None:
    mask = tf.cast(mask, k.dtype)
  # One log-scale per sequence: the max over features and (real) tokens.
  masked_exponents = k_exponents if mask is None else tf.where(
      mask[None] > 0, k_exponents, tf.fill(tf.shape(k_exponents), tf.constant(-1e30, k.dtype)))
  scale = tf.stop_gradient(tf.reduce_max(masked_exponents, axis=[0, 1], keepdims=True))
  # Padding gets exp(-1e30 - scale) = 0: it can neither overflow nor be attended to.
  k_features = tf.exp(masked_exponents - scale) / math.sqrt(k_exponents.shape[0])
  kv = tf.einsum("ml...,dl...->md...", k_features, v)  # [m, d_v, ...]
  k_sum = tf.reduce_sum(k_features, axis=1)  # [m, ...]
  numerator = tf.einsum("ml...,md...->dl...", q_features, kv)  # [d_v, L, ...]
  denominator = tf.einsum("ml...,m...->l...", q_features, k_sum)  # [L, ...]
  return numerator / tf.maximum(denominator, eps)[None]


def exact_softmax_attention(q, k, v, mask=None):
  """softmax_j(q_i^T k_j) v_j, the quadratic reference (same layout)."""
  logits = tf.einsum("di...,dj...->ij...", q, k)  # [L, L, ...]
  if mask is not None:
    logits = tf.where(tf.cast(mask, tf.bool)[None], logits,
                      tf.fill(tf.shape(logits), tf.constant(-1e30, logits.dtype)))
  weights = tf.nn.softmax(logits, axis=1)
  return tf.einsum("ij...,dj...->di...", weights, v)
