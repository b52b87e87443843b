"""The tensor-wise Mnemosyne network (pure functions): `Mnemosyne(mode="tensor")`.

Per step, for one tensor of N coordinates:
  1. per-coordinate tokens x_i: the Andrychowicz log-magnitude and sign of g_i,
     and g_i / rms(g) (bounded);
  2. the Hierarchical Pooling Encoder (`hpe.py`) summarizes the N tokens into
     b meta-tokens (with a mask);
  3. a CAM (`cam.py`) per head remembers the history of each meta-token
     position: the CAM batch is [heads, b], so the state does not grow with N;
  4. the spatial encoder (SPE): the masked mean over the b positions of
     [meta-token, CAM read-out], through a tanh layer, gives the tensor's
     compact representation e;
  5. every coordinate's update comes from e and its own token through a small
     MLP (in groups of group_chunks * chunk coordinates, so its hidden layer
     never needs memory for the whole tensor), normalized per tensor as in the
     coordinate-wise network:

    update = -lr * exp(log_step_size) * exp(a * tanh(mean(s))) * d / rms(d) - lr * wd * param

The state is a CamState of fixed size per tensor (`per_tensor_state`; its slot
is one flat vector): optimizer memory O(1) in N.
"""

import dataclasses
import math
from typing import Dict, Tuple

import tensorflow as tf

from mnemosyne_tf.core import cam
from mnemosyne_tf.core import features
from mnemosyne_tf.core import hpe
from mnemosyne_tf.core import learned_optimizer
from mnemosyne_tf.core import network
from mnemosyne_tf.core import random_features

Theta = Dict[str, tf.Tensor]
TOKEN_DIM = 3


@dataclasses.dataclass(frozen=True)
class TensorConfig(learned_optimizer.ConfigDict):
  """Sizes of the tensor-wise network (HPE fields as in hpe.HpeConfig)."""
  model_dim: int = 8
  chunk: int = 64
  max_tokens: int = 4
  hpe_features: int = 16
  group_chunks: int = 1024
  num_heads: int = 2
  key_dim: int = 2
  value_dim: int = 4
  num_features: int = 4  # hyperbolic: 2 projection rows per pair
  hidden_dim: int = 16
  preprocessing_k: float = 5.0
  projection_seed: int = 0
  magnitude_range: float = 2.0
  gradient_eps: float = 0.0  # as in CoordinateConfig

  def __post_init__(self):
    network.check_gradient_eps(self.gradient_eps, type(self).__name__)
    for name in ("num_heads", "key_dim", "value_dim", "hidden_dim"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"TensorConfig.{name} must be an integer >= 1, got {value!r}")
    if not isinstance(self.num_features, int) or self.num_features < 2 or self.num_features % 2:
      raise ValueError(f"TensorConfig.num_features must be an even integer >= 2, got "
                       f"{self.num_features!r}")
    if not 0 <= self.magnitude_range <= 10:
      raise ValueError(f"TensorConfig.magnitude_range must be in [0, 10], got "
                       f"{self.magnitude_range!r}")
    self.hpe_config()  # validates the HPE fields

  def hpe_config(self) -> hpe.HpeConfig:
    return hpe.HpeConfig(token_dim=TOKEN_DIM, model_dim=self.model_dim, chunk=self.chunk,
                         max_tokens=self.max_tokens, num_features=self.hpe_features,
                         group_chunks=self.group_chunks,
                         projection_seed=self.projection_seed + 1)


def map_column_groups(fn, x: tf.Tensor, group: int) -> tf.Tensor:
  """fn over groups of `group` columns of x [C, N], concatenated: fn(x) computed
  with working memory for one group (fn maps [C, n] -> [C', n] column by column).

  Full groups are sliced from x inside a while loop; the last, partial group
  is computed on its own (no padded copy of x).
  """
  channels, n = x.shape
  if n <= group:
    return fn(x)
  full, rest = divmod(n, group)
  first = fn(x[:, :group])  # [C', group]: gives the output's rows and dtype

  def body(i, out):
    return i + 1, out.write(i, fn(tf.slice(x, [0, i * group], [channels, group])))

  out = tf.TensorArray(first.dtype, size=full, element_shape=first.shape).write(0, first)
  _, out = tf.while_loop(lambda i, _: i < full, body, (tf.constant(1), out))
  rows = first.shape[0]
  parts = [tf.reshape(tf.transpose(out.stack(), [1, 0, 2]), [rows, full * group])]
  if rest:
    parts.append(fn(x[:, full * group:]))
  return tf.concat(parts, axis=1)


class TensorWiseNetwork(learned_optimizer.LearnedOptimizerNetwork):
  """Tensor-wise Mnemosyne: HPE + CAM + SPE + per-coordinate head."""

  kind = "tensor"
  fixed_suffixes = ("/projection",)
  per_tensor_state = True

  def theta_shapes(self) -> Dict[str, Tuple[int, ...]]:
    c = self.config
    d, h, k, v = c.model_dim, c.num_heads, c.key_dim, c.value_dim
    shapes = {f"hpe/{name}": tuple(t.shape)
              for name, t in hpe.init_theta(c.hpe_config()).items()}
    shapes.update({
        "cam/query": (d, h, k), "cam/key": (d, h, k), "cam/value": (d, h, v),
        "cam/log_tau": (h,), "cam/projection": (c.num_features // 2, k),
        "spe/w": (d + h * v, d), "spe/b": (d,),
        "head/w1e": (d, c.hidden_dim), "head/w1x": (TOKEN_DIM, c.hidden_dim),
        "head/b1": (c.hidden_dim,), "head/w2": (c.hidden_dim, 2), "head/b2": (2,),
        "log_step_size": ()})
    return shapes

  def init_theta(self, seed: int, step_size: float = 1e-3) -> Theta:
    """Random memory weights around a head that starts as normalized SGD
    (direction = g / rms(g)), so an untrained network already descends."""
    c = self.config
    theta = {f"hpe/{n}": t for n, t in hpe.init_theta(c.hpe_config(), seed).items()}
    for i, (name, shape) in enumerate(sorted(self.theta_shapes().items())):
      if name.startswith("hpe/") or name == "cam/projection":
        continue
      theta[name] = 0.1 * tf.random.stateless_normal(shape, [seed, 100 + i])
    theta["cam/projection"] = random_features.orthogonal_gaussian_projection(
        c.num_features // 2, c.key_dim, [c.projection_seed, 3])
    theta["cam/log_tau"] = tf.fill([c.num_heads], math.log(0.1))
    w1x = [[0.0] * c.hidden_dim for _ in range(TOKEN_DIM)]
    w1x[2][0], w1x[2][1] = 1.0, -1.0  # relu(x) and relu(-x) of g / rms(g)
    theta["head/w1x"] = tf.constant(w1x)
    w2 = [[0.0, 0.0] for _ in range(c.hidden_dim)]
    w2[0][0], w2[1][0] = 1.0, -1.0
    theta["head/w2"] = tf.constant(w2)
    theta["head/b1"] = tf.zeros([c.hidden_dim])
    theta["head/b2"] = tf.zeros([2])
    theta["log_step_size"] = tf.constant(math.log(step_size))
    return theta

  def init_state(self, param: tf.Tensor) -> cam.CamState:
    """Empty memories: [heads, max_tokens] of them, whatever the tensor's size."""
    c = self.config
    return cam.init([c.num_heads, c.max_tokens], c.num_features, c.value_dim)

  def apply(self, theta: Theta, state: cam.CamState, grad, param, step, learning_rate=1.0,
            weight_decay=0.0):
    c = self.config
    shape = tf.shape(grad)
    g = tf.reshape(tf.cast(grad, tf.float32), [-1])
    if g.shape[0] is None:
      raise ValueError("the tensor-wise network needs tensors of static size")
    g = tf.clip_by_value(g, -features.MAX_ABS_GRADIENT, features.MAX_ABS_GRADIENT)
    rms_g = features.sqrt_zero_safe(tf.reduce_mean(tf.square(g)))
    log_mag, sign = features.log_sign_preprocessing(g, c.preprocessing_k)
    x = tf.stack([log_mag, sign,
                  tf.clip_by_value(g / tf.maximum(rms_g, 1e-30), -5.0, 5.0)])
    hpe_theta = {n[4:]: t for n, t in theta.items() if n.startswith("hpe/")}
    meta, mask = hpe.encode(hpe_theta, x, c.hpe_config())  # [D, b], [b]
    query = tf.einsum("dhk,db->khb", theta["cam/query"], meta)
    key = tf.einsum("dhk,db->khb", theta["cam/key"], meta)
    value = tf.einsum("dhv,db->vhb", theta["cam/value"], meta)
    key_features, key_log_scale = random_features.positive_features(
        key, theta["cam/projection"], "hyperbolic")  # [M, H, b], [H, b]
    query_features, _ = random_features.positive_features(
        query, theta["cam/projection"], "hyperbolic")
    updated = cam.update(state, key_features, key_log_scale, value,
                         tf.exp(theta["cam/log_tau"])[:, None])
    real = mask > 0  # padded meta-token positions keep their (empty) memory
    memory = cam.CamState(*(tf.where(real, new, old) for new, old in zip(updated, state)))
    readout = cam.read(memory, query_features)  # [V, H, b]
    tokens = tf.concat([meta, tf.reshape(readout, [c.value_dim * c.num_heads, -1])], 0)
    pooled = tf.reduce_sum(tokens * mask, axis=1) / tf.maximum(tf.reduce_sum(mask), 1.0)
    e = tf.tanh(tf.linalg.matvec(theta["spe/w"], pooled, transpose_a=True) + theta["spe/b"])
    tensor_bias = tf.linalg.matvec(theta["head/w1e"], e, transpose_a=True) + theta["head/b1"]

    def head(tokens):  # [TOKEN_DIM, n] -> [2, n]
      hidden = tf.nn.relu(tf.matmul(theta["head/w1x"], tokens, transpose_a=True)
                          + tensor_bias[:, None])  # [hidden, n]
      return tf.matmul(theta["head/w2"], hidden, transpose_a=True) + theta["head/b2"][:, None]

    out = map_column_groups(head, x, c.group_chunks * c.chunk)  # [2, N]
    update = network.normalized_update(out[0], out[1], theta["log_step_size"],
                                       c.magnitude_range, param, learning_rate, weight_decay,
                                       grad=g, gradient_eps=c.gradient_eps)
    return tf.reshape(update, shape), memory
