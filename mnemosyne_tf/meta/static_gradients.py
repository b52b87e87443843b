"""A BatchMatMulV2 gradient with static broadcast reductions, for second-order
meta-gradients under XLA.

A second-order meta-gradient differentiates the optimizee's own gradient
computation inside the unroll's `tf.while_loop`. TensorFlow's gradient of a
broadcasting batch matmul (Keras's Dense and MultiHeadAttention on [B, W, D]
tokens: a rank-3 by rank-2 `tf.matmul`) sums over the broadcast batch
dimensions with axes computed at run time (`BroadcastGradientArgs`). Inside
the loop those axes become loop-carried values, and XLA then refuses to
compile their own gradient ("... must be a compile-time constant"), so no
transformer task could be meta-trained with `second_order`.

`static_batch_matmul_gradients()` makes that gradient compute its reduction
axes from the static shapes while a function is traced in it: the same
sums, with constant axes. Operands with unknown shapes keep TensorFlow's own
gradient. The swap is confined to the `with` block (the registry entry is
restored on exit, also on error).
"""

import contextlib
import threading
from typing import List

import tensorflow as tf
from tensorflow.python.framework import ops  # the gradient registry (no public API)

_OP = "BatchMatMulV2"
_LOCK = threading.RLock()


def _reduce_to(grad: tf.Tensor, shape: List[int]) -> tf.Tensor:
  """Sums `grad` (of the broadcast shape) over the batch dimensions that
  broadcasting added or expanded, so that it has `shape`."""
  grad_shape = grad.shape.as_list()
  lead = len(grad_shape) - len(shape)
  axes = list(range(lead)) + [lead + i for i, size in enumerate(shape[:-2])
                              if size == 1 and grad_shape[lead + i] != 1]
  if axes:
    grad = tf.reduce_sum(grad, axes)
  return tf.reshape(grad, shape)


def batch_matmul_v2_gradient(op, grad, *, fallback):
  """The gradient of z = matmul(x, y, adjoint_a=adj_x, adjoint_b=adj_y) with
  respect to x and y, as TensorFlow's, with reductions over static axes;
  `fallback` (TensorFlow's gradient) when a shape is not static."""
  x, y = op.inputs[0], op.inputs[1]
  if not (x.shape.is_fully_defined() and y.shape.is_fully_defined()):
    return fallback(op, grad)
  adj_x, adj_y = op.get_attr("adj_x"), op.get_attr("adj_y")
  matmul = tf.linalg.matmul
  if not adj_x and not adj_y:
    grad_x, grad_y = matmul(grad, y, adjoint_b=True), matmul(x, grad, adjoint_a=True)
  elif not adj_x:
    grad_x, grad_y = matmul(grad, y), matmul(grad, x, adjoint_a=True)
  elif not adj_y:
    grad_x, grad_y = matmul(y, grad, adjoint_b=True), matmul(x, grad)
  else:
    grad_x = matmul(y, grad, adjoint_a=True, adjoint_b=True)
    grad_y = matmul(grad, x, adjoint_a=True, adjoint_b=True)
  return _reduce_to(grad_x, x.shape.as_list()), _reduce_to(grad_y, y.shape.as_list())


@contextlib.contextmanager
def static_batch_matmul_gradients():
  """Within the block, tracing uses `batch_matmul_v2_gradient` for
  BatchMatMulV2 (see the module docstring)."""
  registry = ops._gradient_registry._registry  # pylint: disable=protected-access
  with _LOCK:
    saved = registry[_OP]
    original = saved["type"]
    registry[_OP] = dict(saved, type=lambda op, grad: batch_matmul_v2_gradient(
        op, grad, fallback=original))
    try:
      yield
    finally:
      registry[_OP] = saved
