"""The Hierarchical Pooling Encoder: fixed output shape, padding, invariances, XLA."""

import numpy as np
import tensorflow as tf

from mnemosyne_tf.core import hpe


def _tokens(n, seed=0, f=2):
  return tf.constant(np.random.RandomState(seed).randn(f, n).astype(np.float32))


class HpeTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.config = hpe.HpeConfig(chunk=64, max_tokens=4)
    self.theta = hpe.init_theta(self.config, seed=3)

  def test_output_shape_is_the_same_for_every_tensor_size(self):
    for n in (1, 7, 1000, 1_000_003):
      out, mask = hpe.encode(self.theta, _tokens(n), self.config)
      self.assertEqual(out.shape, (8, 4), msg=n)
      self.assertEqual(mask.shape, (4,), msg=n)
      self.assertTrue(np.all(np.isfinite(out.numpy())), msg=n)
      self.assertEqual(int(mask.numpy().sum()),
                       min(n, 4) if n <= 4 else hpe.levels(n, self.config)[-1], msg=n)
    self.assertEqual(hpe.levels(1_000_003, self.config), [15626, 245, 4])

  def test_padded_meta_tokens_are_zero_and_small_tensors_are_only_embedded(self):
    tokens = _tokens(3)
    out, mask = hpe.encode(self.theta, tokens, self.config)
    self.assertAllEqual(mask, [1, 1, 1, 0])
    want = tf.transpose(tf.transpose(tokens) @ self.theta["embed/w"] + self.theta["embed/b"])
    self.assertAllClose(out[:, :3], want)
    self.assertAllEqual(out[:, 3], tf.zeros(8))

  def test_memory_groups_and_their_padding_do_not_change_results(self):
    tokens = _tokens(64 * 37 + 5, seed=1)
    whole, _ = hpe.encode(self.theta, tokens,
                          hpe.HpeConfig(chunk=64, max_tokens=4, group_chunks=100000))
    for group in (1, 3, 7):
      grouped, _ = hpe.encode(self.theta, tokens,
                              hpe.HpeConfig(chunk=64, max_tokens=4, group_chunks=group))
      self.assertAllClose(whole, grouped, rtol=1e-5, atol=1e-5, msg=group)
    exact = _tokens(64 * 6, seed=4)  # whole groups only, no partial one
    self.assertAllClose(
        hpe.encode(self.theta, exact, hpe.HpeConfig(chunk=64, max_tokens=4))[0],
        hpe.encode(self.theta, exact, hpe.HpeConfig(chunk=64, max_tokens=4,
                                                    group_chunks=3))[0],
        rtol=1e-5, atol=1e-5)

  def test_chunks_are_contiguous_and_order_free_inside(self):
    """Bidirectional attention + mean pooling ignore order inside a chunk, and
    only inside it: permuting within chunks keeps the output, across does not."""
    n = 64 * 20
    tokens = _tokens(n, seed=2)
    base, _ = hpe.encode(self.theta, tokens, self.config)
    rng = np.random.RandomState(0)
    within = np.concatenate([64 * c + rng.permutation(64) for c in range(20)])
    permuted, _ = hpe.encode(self.theta, tf.gather(tokens, within, axis=1), self.config)
    self.assertAllClose(base, permuted, rtol=1e-4, atol=1e-5)
    across = np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2)])  # mixes chunks
    shuffled, _ = hpe.encode(self.theta, tf.gather(tokens, across, axis=1), self.config)
    self.assertNotAllClose(base, shuffled, rtol=1e-3, atol=1e-3)

  def test_xla_compiles_and_matches(self):
    config = hpe.HpeConfig(chunk=16, max_tokens=2, group_chunks=5)
    theta = hpe.init_theta(config)
    tokens = _tokens(1000)
    eager, _ = hpe.encode(theta, tokens, config)
    compiled, _ = tf.function(lambda t: hpe.encode(theta, t, config), jit_compile=True)(tokens)
    self.assertAllClose(eager, compiled, rtol=1e-4, atol=1e-5)

  def test_invalid_sizes_raise_value_error(self):
    for kwargs in ({"chunk": 1}, {"max_tokens": 0}, {"model_dim": -2}, {"group_chunks": 0}):
      with self.assertRaisesRegex(ValueError, "HpeConfig", msg=kwargs):
        hpe.HpeConfig(**kwargs)
    with self.assertRaisesRegex(ValueError, "features"):
      hpe.encode(self.theta, _tokens(10, f=3), self.config)


if __name__ == "__main__":
  tf.test.main()
