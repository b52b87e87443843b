"""The LSTM learned-optimizer baseline (Andrychowicz et al. 2016)."""

import math
import os

import keras
import numpy as np
import tensorflow as tf

import mnemosyne_tf
from mnemosyne_tf.baselines import lstm
from mnemosyne_tf.weights import file_format
from tests import testing


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


class LSTMTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.net = lstm.LSTMNetwork(lstm.LSTMConfig())
    self.theta = self.net.init_theta(seed=0)
    self.theta["out/w"] = tf.random.stateless_normal([20], [1, 1])

  def test_paper_sizes(self):
    self.assertEqual(self.net.state_size(), 2 * 2 * 20)
    self.assertEqual(self.theta["lstm0/kernel"].shape, (2 + 20, 80))
    self.assertEqual(self.theta["lstm1/kernel"].shape, (20 + 20, 80))

  def test_two_steps_match_a_numpy_lstm(self):
    """Independent NumPy two-layer LSTM over the preprocessed gradients."""
    theta = {k: v.numpy().astype(np.float64) for k, v in self.theta.items()}
    grads = testing.random_gradients((3,), 2)
    param = tf.zeros([3])
    state = self.net.init_state(param)
    h = [np.zeros((20, 3)), np.zeros((20, 3))]
    c = [np.zeros((20, 3)), np.zeros((20, 3))]
    for t, g in enumerate(grads, start=1):
      update, state = self.net.apply(self.theta, state, tf.constant(g), param, t)
      g64 = g.astype(np.float64)
      x = np.stack([np.clip(np.log(np.abs(g64) + 1e-20) / 5, -1, 1),
                    np.clip(g64 * math.exp(5), -1, 1)])
      for l in range(2):
        z = theta[f"lstm{l}/kernel"].T @ np.concatenate([x, h[l]]) + theta[f"lstm{l}/bias"][:, None]
        i, f, cand, o = np.split(z, 4)
        c[l] = sigmoid(f) * c[l] + sigmoid(i) * np.tanh(cand)
        h[l] = sigmoid(o) * np.tanh(c[l])
        x = h[l]
      want = 0.01 * (theta["out/w"] @ x + theta["out/b"])
      self.assertAllClose(update, want, rtol=1e-4, atol=1e-7)

  def test_keras_learned_optimizer_runs_lstm_weights(self):
    path = os.path.join(self.create_tempdir().full_path, "lstm.npz")
    file_format.save(path, "lstm", self.net.config.to_dict(),
                     {k: v.numpy() for k, v in self.theta.items()}, {"kind": "test"})
    opt = mnemosyne_tf.LearnedOptimizer(weights=path)
    self.assertEqual(opt.state_floats_per_parameter, 80)
    var = keras.Variable(np.ones(4, np.float32))
    opt.apply_gradients([(tf.constant([0.1, -0.2, 0.3, 1e-6]), var)])
    self.assertNotAllClose(var, np.ones(4))
    with self.assertRaisesRegex(mnemosyne_tf.WeightsError, "is for network 'lstm'"):
      mnemosyne_tf.Mnemosyne(weights=path)

  def test_invalid_config(self):
    with self.assertRaisesRegex(ValueError, "hidden_dim"):
      lstm.LSTMConfig(hidden_dim=0)
    with self.assertRaisesRegex(ValueError, "output_scale"):
      lstm.LSTMConfig(output_scale=0.0)


if __name__ == "__main__":
  tf.test.main()
