"""One float32 slot per model variable: packing a learned optimizer's state.

A learned optimizer's state for a tensor of P coordinates is a nest of tensors
whose last axis is P (`[k1, ..., P]`, possibly just `[P]`). The front ends keep it
in a single slot variable of shape [S, *var.shape] (S = total leading size): the
state axis leads so that the parameter's own layout stays the minor, vectorized
(and shardable) part.

A per-tensor state (fixed-size leaves whatever the tensor's size, e.g.
tensor-wise Mnemosyne's) is kept flat instead: one [floats] vector.
"""

from typing import Any, List, Sequence

import numpy as np
import tensorflow as tf


def leading_shapes(state_for_one: Any) -> List[List[int]]:
  """Leading shapes of every leaf of a state built for P = 1 (its template)."""
  return [list(leaf.shape[:-1]) for leaf in tf.nest.flatten(state_for_one)]


def state_size(template: Any) -> int:
  """S: floats per coordinate."""
  return int(sum(np.prod(s, dtype=np.int64) for s in leading_shapes(template)))


def pack(state: Any, shape: Sequence[int]) -> tf.Tensor:
  """Nest of [..., P] tensors -> [S, *shape]."""
  leaves = tf.nest.flatten(state)
  size = int(np.prod(shape, dtype=np.int64))
  rows = [tf.reshape(leaf, [-1, size]) for leaf in leaves]
  packed = tf.concat(rows, axis=0) if len(rows) > 1 else rows[0]
  return tf.reshape(packed, [-1] + list(shape))


def unpack(packed: tf.Tensor, template: Any) -> Any:
  """[S, *shape] -> the nest of `template` (a state for P = 1) with P = prod(shape)."""
  shapes = leading_shapes(template)
  sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
  flat = tf.reshape(packed, [sum(sizes), -1])  # [S, P]
  parts = tf.split(flat, sizes, axis=0) if len(sizes) > 1 else [flat]
  leaves = [tf.reshape(part, s + [-1]) for part, s in zip(parts, shapes)]
  return tf.nest.pack_sequence_as(template, leaves)


def flat_size(template: Any) -> int:
  """Floats in a per-tensor state."""
  return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in tf.nest.flatten(template)))


def pack_flat(state: Any) -> tf.Tensor:
  """Nest of fixed-size tensors -> one flat [floats] vector."""
  return tf.concat([tf.reshape(leaf, [-1]) for leaf in tf.nest.flatten(state)], axis=0)


def unpack_flat(packed: tf.Tensor, template: Any) -> Any:
  """[floats] -> the nest of `template` (same leaf shapes)."""
  leaves = tf.nest.flatten(template)
  sizes = [int(np.prod(leaf.shape, dtype=np.int64)) for leaf in leaves]
  parts = tf.split(packed, sizes) if len(sizes) > 1 else [packed]
  return tf.nest.pack_sequence_as(
      template, [tf.reshape(part, leaf.shape) for part, leaf in zip(parts, leaves)])
