"""The BatchMatMulV2 gradient with static reductions (meta/static_gradients.py)
against TensorFlow's own gradient, to first and second order, and inside an
XLA-compiled unroll, where TensorFlow's own fails to compile."""

import itertools

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from tensorflow.python.framework import ops

from mnemosyne_tf.meta import static_gradients

# (x shape, y shape) before adjoints: rank-3 by rank-2 (Keras's Dense and
# EinsumDense on tokens), a size-1 batch dimension broadcast against 2, and
# equal batch shapes (nothing to reduce).
_SHAPES = [((3, 2, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 6)), ((2, 3, 4), (2, 4, 5))]


def _operands(x_shape, y_shape, adj_x, adj_y, seed):
  rng = np.random.RandomState(seed)
  x = rng.normal(size=x_shape).astype(np.float32)
  y = rng.normal(size=y_shape).astype(np.float32)
  if adj_x:
    x = np.swapaxes(x, -1, -2)
  if adj_y:
    y = np.swapaxes(y, -1, -2)
  return tf.constant(x), tf.constant(y)


def _first_and_second_order(x, y, adj_x, adj_y):
  """d f / d(x, y) and d <d f / dx, c> / dy for f = sum(tanh(x @ y)^2)."""
  c = tf.ones_like(x) * 0.3
  with tf.GradientTape() as outer:
    outer.watch(y)
    with tf.GradientTape() as inner:
      inner.watch([x, y])
      z = tf.matmul(x, y, adjoint_a=adj_x, adjoint_b=adj_y)
      f = tf.reduce_sum(tf.tanh(z) ** 2)
    gx, gy = inner.gradient(f, [x, y])
    projected = tf.reduce_sum(gx * c)
  return gx, gy, outer.gradient(projected, y)


class StaticGradientsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(itertools.product(range(len(_SHAPES)), [False, True],
                                              [False, True]))
  def test_matches_tensorflow_to_second_order(self, shapes, adj_x, adj_y):
    x, y = _operands(*_SHAPES[shapes], adj_x, adj_y, seed=shapes)
    expected = _first_and_second_order(x, y, adj_x, adj_y)
    with static_gradients.static_batch_matmul_gradients():
      got = _first_and_second_order(x, y, adj_x, adj_y)
    for e, g in zip(expected, got):
      self.assertEqual(e.shape, g.shape)
      self.assertAllClose(e, g, rtol=1e-5, atol=1e-5)

  def test_unknown_shapes_keep_tensorflows_gradient(self):
    x, y = _operands(*_SHAPES[0], False, False, seed=0)
    spec = [tf.TensorSpec([None, 2, 4]), tf.TensorSpec([4, None])]
    grad = tf.function(lambda a, b: _first_and_second_order(a, b, False, False),
                       input_signature=spec)
    expected = grad(x, y)
    with static_gradients.static_batch_matmul_gradients():
      got = tf.function(lambda a, b: _first_and_second_order(a, b, False, False),
                        input_signature=spec)(x, y)
    for e, g in zip(expected, got):
      self.assertAllClose(e, g, rtol=1e-5, atol=1e-5)

  def test_registry_is_restored_on_exit_and_on_error(self):
    original = ops._gradient_registry.lookup("BatchMatMulV2")  # pylint: disable=protected-access
    with static_gradients.static_batch_matmul_gradients():
      self.assertIsNot(ops._gradient_registry.lookup("BatchMatMulV2"), original)  # pylint: disable=protected-access
      with static_gradients.static_batch_matmul_gradients():  # nesting is allowed
        pass
    self.assertIs(ops._gradient_registry.lookup("BatchMatMulV2"), original)  # pylint: disable=protected-access
    with self.assertRaises(KeyError):
      with static_gradients.static_batch_matmul_gradients():
        raise KeyError("inside")
    self.assertIs(ops._gradient_registry.lookup("BatchMatMulV2"), original)  # pylint: disable=protected-access

  def test_second_order_unroll_compiles_under_xla(self):
    """A meta-gradient through a `tf.range` unroll whose inner step differentiates
    a rank-3 by rank-2 matmul: compiled with XLA in the context, it equals the
    graph-mode value with TensorFlow's own gradient. Outside the context XLA
    refuses it (the reduction axes are loop-carried values)."""
    x = tf.random.stateless_normal([3, 2, 4], seed=[1, 2])
    w = tf.random.stateless_normal([4, 5], seed=[3, 4])

    def meta_gradient(w, x):
      with tf.GradientTape() as outer:
        outer.watch(w)
        p, total = w, tf.constant(0.0)
        for _ in tf.range(3):
          with tf.GradientTape() as inner:
            inner.watch(p)
            loss = tf.reduce_sum(tf.tanh(tf.matmul(x, p)) ** 2)
          p = p - 0.1 * inner.gradient(loss, p) * w
          total += loss
      return total, outer.gradient(total, w)

    expected = tf.function(meta_gradient)(w, x)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "compile-time constant"):
      tf.function(meta_gradient, jit_compile=True)(w, x)
    with static_gradients.static_batch_matmul_gradients():
      got = tf.function(meta_gradient, jit_compile=True)(w, x)
    self.assertAllClose(expected[0], got[0], rtol=1e-5)
    self.assertAllClose(expected[1], got[1], rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
  tf.test.main()
