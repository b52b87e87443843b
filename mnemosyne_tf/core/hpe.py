"""The Hierarchical Pooling Encoder (HPE) of tensor-wise Mnemosyne.

A tensor of N coordinates gives N tokens (per-coordinate features, e.g. the
gradient's log-magnitude and sign). The HPE embeds them, cuts the sequence into
chunks of `chunk` tokens, encodes every chunk with a bidirectional Performer
block (`performer.py`), mean-pools each chunk into one token, and repeats on the
pooled sequence until at most `max_tokens` tokens remain; the result is padded
to exactly `max_tokens` meta-tokens with a mask. One block's weights serve
every level, so theta does not depend on N, and the output shape is the same
for every tensor size.

Static shapes only (N is known when the update is traced): the number of
levels and every padding are Python integers, so XLA compiles it. Working
memory is bounded: every level is processed in groups of `group_chunks` chunks
sliced from its input inside a `tf.while_loop`, so a tensor of 10^8 coordinates
needs memory for one group (and the N / chunk pooled tokens), not for N embedded
tokens (`benchmarks/hpe_memory.py` measures it).

Layout as in the rest of core/: features first ([F, N] in, [D, max_tokens] out).
"""

import dataclasses
import math
from typing import Dict, List, Tuple

import tensorflow as tf

from mnemosyne_tf.core import performer
from mnemosyne_tf.core import random_features


@dataclasses.dataclass(frozen=True)
class HpeConfig:
  """Sizes of the HPE.

  Attributes:
    token_dim: features per coordinate (F).
    model_dim: width of the encoder (D).
    chunk: tokens per chunk (>= 2).
    max_tokens: meta-tokens out (b >= 1).
    num_features: FAVOR+ random features (softmax kind).
    group_chunks: first-level chunks processed at once (the memory budget:
      about group_chunks * chunk * model_dim * 8 floats).
    projection_seed: seed of the fixed FAVOR+ projection.
  """
  token_dim: int = 2
  model_dim: int = 8
  chunk: int = 64
  max_tokens: int = 4
  num_features: int = 16
  group_chunks: int = 1024
  projection_seed: int = 1

  def __post_init__(self):
    for name in ("token_dim", "model_dim", "max_tokens", "num_features", "group_chunks"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"HpeConfig.{name} must be an integer >= 1, got {value!r}")
    if not isinstance(self.chunk, int) or self.chunk < 2:
      raise ValueError(f"HpeConfig.chunk must be an integer >= 2, got {self.chunk!r}")


def levels(n: int, config: HpeConfig) -> List[int]:
  """Sequence lengths after each pooling level, for a tensor of n coordinates."""
  if n < 1:
    raise ValueError(f"a tensor must have at least one coordinate, got {n}")
  sizes = []
  while n > config.max_tokens:
    n = -(-n // config.chunk)
    sizes.append(n)
  return sizes


def init_theta(config: HpeConfig, seed: int = 0) -> Dict[str, tf.Tensor]:
  """Random theta (Glorot-like scales); the projection is fixed by the config."""
  d, f = config.model_dim, config.token_dim
  shapes = {"embed/w": (f, d), "embed/b": (d,), "block/wq": (d, d), "block/wk": (d, d),
            "block/wv": (d, d), "block/wo": (d, d), "block/w1": (d, 2 * d),
            "block/b1": (2 * d,), "block/w2": (2 * d, d)}
  theta = {}
  for i, (name, shape) in enumerate(sorted(shapes.items())):
    if len(shape) == 1:
      theta[name] = tf.zeros(shape)
    else:
      theta[name] = tf.random.stateless_normal(shape, [seed, i]) / math.sqrt(shape[0])
  theta["block/projection"] = projection(config)
  return theta


def projection(config: HpeConfig) -> tf.Tensor:
  return random_features.orthogonal_gaussian_projection(
      config.num_features, config.model_dim, [config.projection_seed, 17])


def _layer_norm(x):
  """Over the feature axis (0), no learned gain (kept small)."""
  mean = tf.reduce_mean(x, axis=0, keepdims=True)
  var = tf.reduce_mean(tf.square(x - mean), axis=0, keepdims=True)
  return (x - mean) * tf.math.rsqrt(var + 1e-5)


def block(theta, x, mask):
  """One pre-norm bidirectional Performer block on chunks: x [D, C, G], mask [C, G]."""
  d = x.shape[0]
  h = _layer_norm(x)
  scale = d ** -0.25  # exp(q^T k / sqrt(d)) = exp((q d^-1/4)^T (k d^-1/4))

  def proj(w, t):
    return tf.einsum("dh,d...->h...", w, t)

  attended = performer.favor_attention(proj(theta["block/wq"], h) * scale,
                                       proj(theta["block/wk"], h) * scale,
                                       proj(theta["block/wv"], h), theta["block/projection"],
                                       mask)
  x = x + proj(theta["block/wo"], attended)
  hidden = tf.nn.gelu(proj(theta["block/w1"], _layer_norm(x))
                      + theta["block/b1"][:, None, None])
  return x + proj(theta["block/w2"], hidden)


def _pool(theta, x, mask):
  """Encode chunks [D, C, G] and mean-pool the real tokens -> [D, G], mask [G]."""
  x = block(theta, x, mask)
  count = tf.reduce_sum(mask, axis=0)  # [G]
  pooled = tf.reduce_sum(x * mask[None], axis=1) / tf.maximum(count, 1.0)[None]
  return pooled, tf.cast(count > 0, x.dtype)


def _chunked(x, mask, chunk):
  """[D, n] -> [D, chunk, ceil(n/chunk)] (padding masked out)."""
  d, n = x.shape
  groups = -(-n // chunk)
  pad = groups * chunk - n
  x = tf.pad(x, [[0, 0], [0, pad]])
  mask = tf.pad(mask, [[0, pad]])
  # Token t of chunk g is coordinate g * chunk + t.
  x = tf.transpose(tf.reshape(x, [d, groups, chunk]), [0, 2, 1])
  mask = tf.transpose(tf.reshape(mask, [groups, chunk]))
  return x, mask


def _pool_level(theta, x, mask, config: HpeConfig, embed: bool):
  """One level: ([C, n] tokens, [n] mask) -> ([D, ceil(n/chunk)], mask).

  Embeds first if `embed` (level 0: C = token_dim). Full groups of
  `group_chunks` chunks are sliced from the input inside a while loop (no padded
  copy of the input is ever made); only the last, partial group is padded.
  Working memory: one group, plus the pooled output (n / chunk tokens).
  """
  channels, n = x.shape
  chunk = config.chunk
  span = config.group_chunks * chunk
  full, rest = n // span, n % span

  def encode_span(xs, valid):
    if embed:
      xs = tf.einsum("fd,fn->dn", theta["embed/w"], xs) + theta["embed/b"][:, None]
    return _pool(theta, *_chunked(xs, valid, chunk))

  pooled, masks = [], []
  if full:
    def body(i, out, out_mask):
      xs = tf.slice(x, [0, i * span], [channels, span])
      valid = tf.slice(mask, [i * span], [span])
      p, m = encode_span(xs, valid)
      return i + 1, out.write(i, p), out_mask.write(i, m)

    out = tf.TensorArray(x.dtype, size=full,
                         element_shape=[config.model_dim, config.group_chunks])
    out_mask = tf.TensorArray(x.dtype, size=full, element_shape=[config.group_chunks])
    _, out, out_mask = tf.while_loop(lambda i, *_: i < full, body,
                                     (tf.constant(0), out, out_mask))
    pooled.append(tf.reshape(tf.transpose(out.stack(), [1, 0, 2]), [config.model_dim, -1]))
    masks.append(tf.reshape(out_mask.stack(), [-1]))
  if rest:
    tail, tail_mask = encode_span(x[:, full * span:], mask[full * span:])
    pooled.append(tail)
    masks.append(tail_mask)
  return tf.concat(pooled, axis=1), tf.concat(masks, axis=0)


def encode(theta: Dict[str, tf.Tensor], tokens: tf.Tensor,
           config: HpeConfig) -> Tuple[tf.Tensor, tf.Tensor]:
  """A tensor's tokens [F, N] -> (meta-tokens [D, max_tokens], mask [max_tokens]).

  N is static. For N <= max_tokens the tokens are only embedded (no pooling).
  """
  f, n = tokens.shape
  if f != config.token_dim:
    raise ValueError(f"tokens have {f} features, the HPE expects {config.token_dim}")
  if n is None or n < 1:
    raise ValueError(f"the HPE needs a static number (>= 1) of tokens, got {n}")
  if n <= config.max_tokens:
    x = tf.einsum("fd,fn->dn", theta["embed/w"], tokens) + theta["embed/b"][:, None]
    mask = tf.ones([n], tokens.dtype)
  else:
    x, mask = _pool_level(theta, tokens, tf.ones([n], tokens.dtype), config, embed=True)
    while x.shape[1] > config.max_tokens:
      x, mask = _pool_level(theta, x, mask, config, embed=False)
  pad = config.max_tokens - x.shape[1]
  return tf.pad(x, [[0, 0], [0, pad]]), tf.pad(mask, [[0, pad]])
