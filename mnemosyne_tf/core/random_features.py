"""Positive random features for the softmax kernel (Performer's FAVOR+).

For a projection matrix W whose rows w_i are (orthogonal) Gaussian vectors, the
positive feature map

    softmax:    phi(x) = m^-1/2 exp(W x - |x|^2 / 2)                      (m features)
    hyperbolic: phi(x) = m^-1/2 exp(-|x|^2 / 2) [exp(W x), exp(-W x)]     (m = 2 rows(W))

satisfies E[phi(x)^T phi(y)] = exp(x^T y) (Choromanski et al. 2021, "Rethinking
Attention with Performers", Lemma 1 and its hyperbolic variant). Mnemosyne's CAM
(arXiv 2302.01128, Sec. 3) uses these maps for its keys and queries.

Everything here is a pure function of its arguments: the projection is drawn
statelessly from an explicit seed, so the same seed always gives the same
features (a CAM state is only meaningful for the projection that built it).

Layout: the feature axis leads and the batch trails (x is [d, ...], features are
[m, ...]). Mnemosyne's batches are huge (one token per parameter) while d and m
are tiny, so elementwise work must vectorize over the batch: as the minor axis it
fills SIMD registers on CPU and is not padded to the 128 lanes of a TPU tile.

Numerical safety: `phi` is returned as stabilized features phi~ = phi exp(-c) with
c = max_i a_i(x) the per-token maximum exponent, together with c itself. A caller
either lets c cancel (a query: it scales numerator and denominator alike) or keeps
track of it (the CAM's running log-scale, see `cam.py`).
"""

import math

import tensorflow as tf

FEATURE_KINDS = ("softmax", "hyperbolic")


def num_projections(kind: str, num_features: int) -> int:
  """Rows of the projection matrix needed for `num_features` features."""
  if kind not in FEATURE_KINDS:
    raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {kind!r}")
  if num_features < 1:
    raise ValueError(f"num_features must be >= 1, got {num_features}")
  if kind == "hyperbolic":
    if num_features % 2:
      raise ValueError(
          f"hyperbolic features come in +/- pairs: num_features must be even, "
          f"got {num_features}")
    return num_features // 2
  return num_features


def orthogonal_gaussian_projection(num_rows: int, dim: int, seed,
                                   dtype=tf.float32) -> tf.Tensor:
  """Draws W [num_rows, dim] with rows w_i ~ N(0, I), orthogonal within blocks.

  Rows come in blocks of `dim` mutually orthogonal directions (QR of a Gaussian
  matrix); each row is then rescaled to the norm of an independent Gaussian
  vector (chi(dim)-distributed), so every row is marginally N(0, I_dim) while the
  block's rows stay orthogonal (Performer's ORF, which lowers the estimator's
  variance).

  Args:
    num_rows: number of projections (rows).
    dim: input dimension d.
    seed: a shape [2] integer tensor or pair for `tf.random.stateless_*`.
    dtype: output dtype.

  Returns:
    [num_rows, dim] projection matrix; identical for identical arguments.
  """
  if num_rows < 1 or dim < 1:
    raise ValueError(f"projection needs num_rows >= 1 and dim >= 1, got "
                     f"{num_rows} x {dim}")
  seed = tf.convert_to_tensor(seed, dtype=tf.int32)
  num_blocks = -(-num_rows // dim)
  blocks = []
  for b in range(num_blocks):
    block_seed = tf.random.experimental.stateless_fold_in(seed, b)
    gaussian = tf.random.stateless_normal([dim, dim], block_seed, dtype=tf.float64)
    q, r = tf.linalg.qr(gaussian)  # [dim, dim], orthonormal columns
    # Fixing the signs by diag(R) makes Q Haar-distributed (uniformly random
    # rotation); without it the directions are biased.
    q = q * tf.sign(tf.linalg.diag_part(r))[None, :]
    blocks.append(tf.transpose(q))  # rows orthonormal
  directions = tf.concat(blocks, axis=0)[:num_rows]  # [R, d]
  norm_seed = tf.random.experimental.stateless_fold_in(seed, num_blocks)
  norms = tf.norm(
      tf.random.stateless_normal([num_rows, dim], norm_seed, dtype=tf.float64),
      axis=-1, keepdims=True)  # [R, 1], chi(d)
  return tf.cast(directions * norms, dtype)


def feature_exponents(x: tf.Tensor, projection: tf.Tensor, kind: str) -> tf.Tensor:
  """The exponents a(x) with phi_i(x) = m^-1/2 exp(a_i(x)).

  Args:
    x: [d, ...] inputs (feature axis first).
    projection: [R, d] projection matrix.
    kind: "softmax" (m = R) or "hyperbolic" (m = 2R).

  Returns:
    [m, ...] exponents.
  """
  wx = tf.tensordot(projection, x, axes=[[1], [0]])  # [R, ...]
  half_sq_norm = 0.5 * tf.reduce_sum(tf.square(x), axis=0, keepdims=True)  # [1, ...]
  if kind == "softmax":
    return wx - half_sq_norm
  if kind == "hyperbolic":
    return tf.concat([wx, -wx], axis=0) - half_sq_norm
  raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {kind!r}")


def positive_features(x: tf.Tensor, projection: tf.Tensor, kind: str):
  """Stabilized positive features phi~(x) and their log-scale c.

  phi(x) = phi~(x) * exp(c), with c = max_i a_i(x) per token, so that every entry
  of phi~ lies in (0, m^-1/2] and the largest equals m^-1/2: no overflow for any x.

  Args:
    x: [d, ...] inputs.
    projection: [R, d] projection matrix.
    kind: "softmax" or "hyperbolic".

  Returns:
    (features [m, ...], log_scale [...]).
  """
  exponents = feature_exponents(x, projection, kind)  # [m, ...]
  log_scale = tf.stop_gradient(tf.reduce_max(exponents, axis=0))  # [...]
  num_features = exponents.shape[0]
  features = tf.exp(exponents - log_scale[None]) / math.sqrt(num_features)
  return features, log_scale


def unstabilized_features(x: tf.Tensor, projection: tf.Tensor, kind: str) -> tf.Tensor:
  """phi(x) = m^-1/2 exp(a(x)) without stabilization ([m, ...]); may overflow.

  For estimators and reference computations on inputs of moderate norm.
  """
  exponents = feature_exponents(x, projection, kind)
  return tf.exp(exponents) / math.sqrt(exponents.shape[0])
