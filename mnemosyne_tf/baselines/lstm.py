"""The LSTM learned optimizer of Andrychowicz et al. (2016), as a baseline.

"Learning to learn by gradient descent by gradient descent" (NeurIPS 2016,
Sec. 2.1 and 3.2): a coordinate-wise two-layer LSTM with 20 hidden units, shared
by all coordinates, reads each coordinate's preprocessed gradient
(log-magnitude and sign, k = 5) and outputs its update, scaled by 0.01:

    (h_t, c_t) = LSTM(x_t, (h_{t-1}, c_{t-1})),  update_t = 0.01 * w^T h_t + b

Unlike Mnemosyne's rule, the update is not normalized: as in the paper, its size
is whatever the network outputs (which is why such optimizers can fail beyond
their meta-training horizon). State: 2 layers x (h, c) x 20 = 80 floats per
parameter. Pure functions over the `LearnedOptimizerNetwork` interface.
"""

import dataclasses
import math
from typing import NamedTuple, Tuple

import tensorflow as tf

from mnemosyne_tf.core import features
from mnemosyne_tf.core import learned_optimizer


@dataclasses.dataclass(frozen=True)
class LSTMConfig(learned_optimizer.ConfigDict):
  """Sizes of the LSTM optimizer (paper defaults)."""
  num_layers: int = 2
  hidden_dim: int = 20
  preprocessing_k: float = 5.0
  output_scale: float = 0.01

  def __post_init__(self):
    for name in ("num_layers", "hidden_dim"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"LSTMConfig.{name} must be an integer >= 1, got {value!r}")
    if not self.preprocessing_k > 0:
      raise ValueError(f"LSTMConfig.preprocessing_k must be > 0, got {self.preprocessing_k!r}")
    if not self.output_scale > 0:
      raise ValueError(f"LSTMConfig.output_scale must be > 0, got {self.output_scale!r}")


class LSTMState(NamedTuple):
  """Per layer hidden and cell states, each [hidden, P]."""
  hidden: Tuple[tf.Tensor, ...]
  cell: Tuple[tf.Tensor, ...]


class LSTMNetwork(learned_optimizer.LearnedOptimizerNetwork):
  """Coordinate-wise LSTM optimizer for one `LSTMConfig`."""

  kind = "lstm"

  def theta_shapes(self):
    c = self.config
    shapes = {}
    for l in range(c.num_layers):
      inputs = 2 if l == 0 else c.hidden_dim
      shapes[f"lstm{l}/kernel"] = (inputs + c.hidden_dim, 4 * c.hidden_dim)
      shapes[f"lstm{l}/bias"] = (4 * c.hidden_dim,)
    shapes["out/w"] = (c.hidden_dim,)
    shapes["out/b"] = ()
    return shapes

  def init_theta(self, seed: int):
    """Glorot-uniform kernels, forget-gate bias 1, zero output."""
    theta = {}
    for i, (name, shape) in enumerate(sorted(self.theta_shapes().items())):
      if name.endswith("/kernel"):
        limit = math.sqrt(6.0 / (shape[0] + shape[1]))
        theta[name] = tf.random.stateless_uniform(shape, [seed, i], -limit, limit)
      elif name.endswith("/bias"):
        h = self.config.hidden_dim
        theta[name] = tf.concat([tf.zeros([h]), tf.ones([h]), tf.zeros([2 * h])], 0)
      elif name == "out/w":
        theta[name] = 0.1 * tf.random.stateless_normal(shape, [seed, i])
      else:
        theta[name] = tf.zeros(shape)
    return theta

  def init_state(self, param):
    size = param.shape.num_elements()
    zeros = tuple(tf.zeros([self.config.hidden_dim, size]) for _ in range(self.config.num_layers))
    return LSTMState(hidden=zeros, cell=zeros)

  def apply(self, theta, state, grad, param, step, learning_rate=1.0, weight_decay=0.0):
    """One step; gate order (input, forget, cell, output)."""
    del step  # the LSTM sees no step count
    c = self.config
    shape = tf.shape(grad)
    g = tf.reshape(tf.cast(grad, tf.float32), [-1])  # [P]
    g = tf.clip_by_value(g, -features.MAX_ABS_GRADIENT, features.MAX_ABS_GRADIENT)
    x = tf.stack(features.log_sign_preprocessing(g, c.preprocessing_k), axis=0)  # [2, P]
    hidden, cell = [], []
    for l in range(c.num_layers):
      z = (tf.matmul(theta[f"lstm{l}/kernel"], tf.concat([x, state.hidden[l]], 0),
                     transpose_a=True) + theta[f"lstm{l}/bias"][:, None])  # [4H, P]
      i, f, cand, o = tf.split(z, 4, axis=0)
      new_cell = tf.sigmoid(f) * state.cell[l] + tf.sigmoid(i) * tf.tanh(cand)
      x = tf.sigmoid(o) * tf.tanh(new_cell)  # [H, P]
      hidden.append(x)
      cell.append(new_cell)
    out = tf.linalg.matvec(x, theta["out/w"], transpose_a=True) + theta["out/b"]  # [P]
    learning_rate = tf.cast(learning_rate, tf.float32)
    update = learning_rate * c.output_scale * out - learning_rate * tf.cast(
        weight_decay, tf.float32) * tf.reshape(tf.cast(param, tf.float32), [-1])
    return tf.reshape(update, shape), LSTMState(tuple(hidden), tuple(cell))
