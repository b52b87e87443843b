"""Coordinate-wise Mnemosyne: the learned optimizer network as pure functions.

Every scalar parameter is a token stream of its own (arXiv 2302.01128, Sec. 3.2,
"coordinate-wise Mnemosyne"): at step t its token is the feature vector
x_t = gradient_features(g_t) (see `features.py`); one or more CAM layers, shared by
all coordinates, attend over that coordinate's whole history; an MLP head maps
the read-out (with x_t) to a direction d_t and a magnitude signal s_t. The update
is normalized per tensor (Celo2, arXiv 2602.19142: per-step RMS normalization
was the most stable form):

    update_t = -learning_rate * exp(log_step_size) * exp(a * tanh(mean(s_t)))
               * d_t / max(rms(d_t), eps)  -  learning_rate * weight_decay * param

with the mean and rms over the tensor and a = `magnitude_range`. Its RMS is
learning_rate * step_size times a learned per-tensor factor in [e^-a, e^a] (it
lets the rule shrink its steps when gradients turn into noise): the update
cannot blow up however long training runs. `learning_rate` is a
dimensionless multiplier (1.0 = the meta-learned step size); weight decay is
decoupled and scaled like in AdamW's schedule multiplier. With
`step_adaptation_rate` > 0 the step is also multiplied by a per-tensor gain
exp(l_t) that the rule adapts online (`step_adaptation.py`); with
`max_relative_update` > 0 a kernel's step is bounded relative to the kernel
(`bound_relative_update`).

Layer l of the CAM stack, with H heads, reads input u (x_t for l = 0, else x_t
concatenated with the previous layer's read-out, flattened value-major):
    q = u W_Q, k = u W_K, v = u W_V (per head), tau = exp(log_tau) (per head).

With `odd_in_gradient` the rule is constrained to flip its update when a
coordinate's gradient history flips sign (queries and keys read only the even
log-magnitude feature, values only the odd ones; the head's direction is its
odd part, its magnitude signal its even part); see CoordinateConfig.

`CoordinateWiseNetwork` only holds the static config; `init_theta`, `init_state`
and `apply` are pure functions of tensors (no tf.Variable), differentiable in
theta, usable in tf.function(jit_compile=True).
"""

import dataclasses
import math
from typing import Dict, NamedTuple, Tuple

import tensorflow as tf

from mnemosyne_tf.core import cam
from mnemosyne_tf.core import features
from mnemosyne_tf.core import learned_optimizer
from mnemosyne_tf.core import random_features
from mnemosyne_tf.core import step_adaptation

Theta = learned_optimizer.Theta

# theta entries that are fixed for the life of a state and never meta-trained.
FIXED_SUFFIXES = ("/projection",)
OUTPUT_NORMALIZATIONS = ("rms", "none")
# rms(param) below this counts as this in the relative-update bound.
DEFAULT_RELATIVE_UPDATE_FLOOR = 0.01


@dataclasses.dataclass(frozen=True)
class CoordinateConfig(learned_optimizer.ConfigDict):
  """Static sizes and constants of the coordinate-wise network.

  Attributes:
    num_layers: CAM layers stacked.
    num_heads: CAM heads per layer (each with its own discount tau).
    key_dim: query/key dimension.
    num_features: random features m per head.
    value_dim: value dimension per head.
    hidden_dim: width of the MLP head.
    feature_kind: "hyperbolic" or "softmax" random features.
    beta2: decay of the gradient second moment used by the normalized feature.
    preprocessing_k: k of the log/sign preprocessing.
    projection_seed: seed of the fixed random-feature projection.
    magnitude_range: a, the bound of the learned per-tensor log step factor.
    output_normalization: "rms": the direction is divided by its RMS over the
      tensor at every step (Celo2's per-step normalization; the update's RMS is
      exactly the learned step times the factor); "none": the direction is
      used as it is (bounded, since the head's inputs are), so the update can
      shrink as the gradients turn into noise, as Adam's m / sqrt(v) does.
    gradient_eps: the update is multiplied by rms(g) / (rms(g) + gradient_eps)
      (per tensor), so that a tensor whose gradient is zero, or float noise far
      below gradient_eps, takes no step (Adam's epsilon plays this part); 0
      turns it off (weights made before it existed).
    odd_in_gradient: constrain the rule to be odd in the gradient: flipping the
      sign of a coordinate's whole gradient history flips its update (weight
      decay aside), as it does for SGD, momentum and Adam. Queries and keys
      read only the even features (the log magnitude), values only the odd
      ones (and earlier layers' read-outs, which are then odd), so that the
      attention weights are even and every read-out odd; the head's direction
      is its odd part (h(z) - h(Sz)) / 2 and its magnitude signal the even part
      (h(z) + h(Sz)) / 2, S negating the odd inputs. theta keeps its shapes;
      the entries the constraint excludes are not used. Without it a
      meta-trained head maps the near-constant features of tiny gradients to
      a constant move whatever their sign (benchmarks/shrinking_gradients.py).
    step_adaptation_rate: > 0 turns on the per-tensor step adaptation of
      `step_adaptation.py` (the normalized hypergradient: the step grows while
      the new gradient agrees with the last move, shrinks when it overshot),
      at this rate per step; 0 (the default, and weights made before it): off.
      It adds two floats per coordinate to the state; theta is unchanged.
    step_adaptation_bound: the adapted step stays within exp(+/- this) of the
      learned one.
    max_relative_update: > 0 bounds the learned part of every step of a
      tensor of rank >= 2 (weight decay is added after it):
      rms(update) <= this * max(rms(param), relative_update_floor)
      (`bound_relative_update`); 0 (the default, and weights made before it):
      no bound. theta and the state are unchanged. The step adaptation does
      not see the bound: while it binds, the short steps keep agreeing with
      the next gradient, so the gain can grow to its limit unused.
    relative_update_floor: see max_relative_update.
    relative_update_rank: which tensors max_relative_update bounds: 0 (the
      default) every tensor of rank >= 2; k in [2, 8] only tensors of rank k.
      With 3, in Keras models, that is the query, key, value and output
      kernels of MultiHeadAttention (EinsumDense kernels [dim, heads,
      head_dim] and [heads, head_dim, dim]), and not Dense kernels (rank 2)
      or 2-D convolution kernels (rank 4): the attention projections are the
      tensors that stall language models at a large step, and the bound
      costs the others their early steps (coordinate_v2.md, attempt 24).
      Like VeLO's (Metz et al., 2022) use of a tensor's shape, this is a
      per-tensor feature the rule reads from the layout, not the gradients.
    early_boost: b in [1, 100]: at 1-based step t the learned step is
      multiplied by 1 + (b - 1) * max(0, 1 - t / early_boost_steps) (nearly
      b at the first step, 1 from step early_boost_steps on), unless the
      optimizer updates a tensor of rank `early_boost_exempt_rank`
      (`step_multiplier`); 1 (the default, and weights made before it): off.
      theta and the state are unchanged; weight decay is not boosted. The
      boost acts before `max_relative_update`'s bound: where the bound binds
      it has no effect. Not available inside Super-Mnemosyne.
    early_boost_steps: see early_boost (an integer >= 1 when early_boost > 1).
    early_boost_exempt_rank: k in [1, 8]: no boost if any of the variables
      the optimizer updates has rank k; 0: always boost. The default 3
      exempts Keras models whose trainable variables include
      MultiHeadAttention kernels (rank 3; so are Conv1D kernels): language
      models end far higher after an early boost, through their dense layers
      as well as their attention, while MLPs and CNNs gain from it
      (coordinate_v2.md, attempt 29). Only trainable variables count: a
      frozen transformer whose prompt or head alone is trained is boosted,
      and so is attention built from rank-2 Dense kernels. Like
      relative_update_rank, a feature read from the layout, here that of
      everything the optimizer updates. Written into config dicts whenever
      early_boost is on.
  """
  # Not annotated fields: class constants. Options added after weights were
  # shipped, left out of config dicts while at their defaults.
  omit_if_default = ("odd_in_gradient", "step_adaptation_rate", "step_adaptation_bound",
                     "max_relative_update", "relative_update_floor", "relative_update_rank",
                     "early_boost", "early_boost_steps", "early_boost_exempt_rank")
  num_layers: int = 1
  num_heads: int = 2
  key_dim: int = 2
  num_features: int = 4
  value_dim: int = 2
  hidden_dim: int = 16
  feature_kind: str = "hyperbolic"
  beta2: float = 0.999
  preprocessing_k: float = 5.0
  projection_seed: int = 0
  magnitude_range: float = 2.0
  output_normalization: str = "rms"
  gradient_eps: float = 0.0
  odd_in_gradient: bool = False
  step_adaptation_rate: float = 0.0
  step_adaptation_bound: float = 3.0
  max_relative_update: float = 0.0
  relative_update_floor: float = DEFAULT_RELATIVE_UPDATE_FLOOR
  relative_update_rank: int = 0
  early_boost: float = 1.0
  early_boost_steps: int = 0
  early_boost_exempt_rank: int = 3

  def __post_init__(self):
    check_gradient_eps(self.gradient_eps, type(self).__name__)
    step_adaptation.check_config(self.step_adaptation_rate, self.step_adaptation_bound,
                                 type(self).__name__)
    for name, value, low_open in (("max_relative_update", self.max_relative_update, False),
                                  ("relative_update_floor", self.relative_update_floor, True)):
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or not (0 < value if low_open else 0 <= value) or not value <= 1):
        raise ValueError(f"CoordinateConfig.{name} must be a float in "
                         f"{'(' if low_open else '['}0, 1], got {value!r}")
    if (isinstance(self.relative_update_rank, bool)
        or not isinstance(self.relative_update_rank, int)
        or not (self.relative_update_rank == 0 or 2 <= self.relative_update_rank <= 8)):
      raise ValueError("CoordinateConfig.relative_update_rank must be 0 (every rank >= 2) "
                       f"or an integer rank in [2, 8], got {self.relative_update_rank!r}")
    if (isinstance(self.early_boost, bool) or not isinstance(self.early_boost, (int, float))
        or not 1 <= self.early_boost <= 100):
      raise ValueError("CoordinateConfig.early_boost must be a float in [1, 100], got "
                       f"{self.early_boost!r}")
    if (isinstance(self.early_boost_steps, bool) or not isinstance(self.early_boost_steps, int)
        or self.early_boost_steps < (1 if self.early_boost != 1 else 0)):
      raise ValueError("CoordinateConfig.early_boost_steps must be an integer >= 1 with "
                       f"early_boost > 1 (>= 0 without), got {self.early_boost_steps!r}")
    if (isinstance(self.early_boost_exempt_rank, bool)
        or not isinstance(self.early_boost_exempt_rank, int)
        or not 0 <= self.early_boost_exempt_rank <= 8):
      raise ValueError("CoordinateConfig.early_boost_exempt_rank must be 0 (boost every "
                       f"model) or a rank in [1, 8], got {self.early_boost_exempt_rank!r}")
    if not isinstance(self.odd_in_gradient, bool):
      raise ValueError("CoordinateConfig.odd_in_gradient must be true or false, got "
                       f"{self.odd_in_gradient!r}")
    if self.output_normalization not in OUTPUT_NORMALIZATIONS:
      raise ValueError(f"CoordinateConfig.output_normalization must be one of "
                       f"{OUTPUT_NORMALIZATIONS}, got {self.output_normalization!r}")
    for name in ("num_layers", "num_heads", "key_dim", "num_features",
                 "value_dim", "hidden_dim"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"CoordinateConfig.{name} must be an integer >= 1, "
                         f"got {value!r}")
    random_features.num_projections(self.feature_kind, self.num_features)
    if not 0.0 < self.beta2 < 1.0:
      raise ValueError(f"CoordinateConfig.beta2 must be in (0, 1), got {self.beta2!r}")
    if not 0 <= self.magnitude_range <= 10:
      raise ValueError("CoordinateConfig.magnitude_range must be in [0, 10], got "
                       f"{self.magnitude_range!r}")
    if not self.preprocessing_k > 0:
      raise ValueError("CoordinateConfig.preprocessing_k must be > 0, got "
                       f"{self.preprocessing_k!r}")

  def to_dict(self) -> dict:
    values = super().to_dict()
    if self.early_boost != 1:  # its meaning depends on the exemption: keep it
      values["early_boost_exempt_rank"] = self.early_boost_exempt_rank
    return values


class CoordinateState(NamedTuple):
  """Optimizer state of one tensor with P coordinates.

  Attributes:
    second_moment: [P] EMA of g^2.
    cams: one `cam.CamState` per layer, batch [num_heads, P].
    adaptation: a `step_adaptation.AdaptationState` with step adaptation, ()
      without (no leaves: the packed state of rules without it is unchanged).
  """
  second_moment: tf.Tensor
  cams: Tuple[cam.CamState, ...]
  adaptation: tuple = ()


def check_gradient_eps(value, owner: str) -> None:
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not 0 <= value < 1):
    raise ValueError(f"{owner}.gradient_eps must be a float in [0, 1), got {value!r}")


def normalized_update(direction, magnitude, log_step_size, magnitude_range, param,
                      learning_rate, weight_decay, normalize=True, grad=None,
                      gradient_eps=0.0, max_relative_update=0.0,
                      relative_update_floor=DEFAULT_RELATIVE_UPDATE_FLOOR,
                      relative_update_rank=0):
  """The learned rules' shared output stage, flat [P] in and out:

      -lr * exp(log_step_size + a * tanh(mean(magnitude))) * gate * direction / rms(direction)
      - lr * weight_decay * param,       gate = rms(grad) / (rms(grad) + gradient_eps)

  (without the division by rms(direction) if not `normalize`; gate = 1 if
  gradient_eps is 0). With `max_relative_update` r > 0 the first term is then
  bounded per tensor (`bound_relative_update`; with `relative_update_rank`
  k > 0 only tensors of rank k).
  """
  log_factor = magnitude_range * tf.tanh(tf.reduce_mean(magnitude))
  learning_rate = tf.cast(learning_rate, tf.float32)
  if normalize:
    rms = features.sqrt_zero_safe(tf.reduce_mean(tf.square(direction)))
    direction = direction / tf.maximum(rms, 1e-12)
  if gradient_eps:
    rms_grad = features.sqrt_zero_safe(tf.reduce_mean(tf.square(grad)))
    direction = direction * (rms_grad / (rms_grad + gradient_eps))
  update = -learning_rate * tf.exp(log_step_size + log_factor) * direction
  if max_relative_update:
    update = bound_relative_update(update, param, max_relative_update,
                                   relative_update_floor, relative_update_rank)
  return update - learning_rate * tf.cast(weight_decay, tf.float32) * tf.reshape(
      tf.cast(param, tf.float32), [-1])


def bound_relative_update(update, param, max_relative_update, floor, rank=0):
  """`update` (flat [P]) scaled down, if needed, so that

      rms(update) <= max_relative_update * max(rms(param), floor)

  for a `param` of rank >= 2 (kernels, embeddings), or with `rank` k > 0 of
  rank exactly k; other tensors (with rank 0: vectors and scalars, most
  biases and normalization scales) are returned unchanged. The direction
  is kept; only the length shrinks. Scale-free like LARS's trust ratio (You
  et al., 2017), but a bound, not a rescaling: an update already within it
  is untouched. Why: attempt 21 in coordinate_v2.md (a character LM's
  attention projections stall at 4x the step unless their relative moves are
  bounded). The rank test is static (ValueError for an unknown rank). Vectors
  are left out because most start at 0, where a relative bound holds them at
  `floor`'s scale (r * floor per step); Keras MultiHeadAttention's
  query/key/value biases are [heads, dim], so they are bounded that way.
  The bound acts after the learning rate: while it binds, a smaller
  `learning_rate` (or step multiplier) does not change the step."""
  if param.shape.rank is None:
    raise ValueError("bound_relative_update needs a parameter of known rank")
  if param.shape.rank < 2 or (rank and param.shape.rank != rank):
    return update
  flat_param = tf.reshape(tf.cast(param, tf.float32), [-1])
  rms_param = features.sqrt_zero_safe(tf.reduce_mean(tf.square(flat_param)))
  rms_update = features.sqrt_zero_safe(tf.reduce_mean(tf.square(update)))
  limit = max_relative_update * tf.maximum(rms_param, floor)  # > 0
  # min(1, limit / rms_update), 1 for a zero update; one expression, so that
  # no unused branch's gradient can overflow.
  return update * (limit / tf.maximum(rms_update, limit))


class CoordinateWiseNetwork(learned_optimizer.LearnedOptimizerNetwork):
  """The coordinate-wise learned optimizer for one `CoordinateConfig`."""

  kind = "coordinate"
  fixed_suffixes = FIXED_SUFFIXES

  def __init__(self, config: CoordinateConfig):
    self._head_input_dim = features.NUM_FEATURES + config.num_heads * config.value_dim
    super().__init__(config)

  # ---------------------------------------------------------------- theta
  def layer_input_dim(self, layer: int) -> int:
    return features.NUM_FEATURES if layer == 0 else self._head_input_dim

  def input_parity(self, layer: int) -> tf.Tensor:
    """[rows] +1/-1: how each row of layer `layer`'s input (x, then for later
    layers and the head the read-outs) responds to flipping the gradient's
    sign under `odd_in_gradient` (read-outs are odd); layer num_layers is the
    head."""
    rows = features.NUM_FEATURES if layer == 0 else self._head_input_dim
    parity = list(features.PARITY) + [-1.0] * (rows - features.NUM_FEATURES)
    return tf.constant(parity, tf.float32)

  def _projection_weights(self, theta: Theta, layer: int):
    """(query, key, value) weights of a CAM layer, with the rows that the
    `odd_in_gradient` constraint excludes zeroed."""
    names = [f"cam{layer}/{n}" for n in ("query", "key", "value")]
    if not self.config.odd_in_gradient:
      return tuple(theta[n] for n in names)
    even = (self.input_parity(layer) > 0)[:, None, None]
    query, key, value = (theta[n] for n in names)
    zeros = tf.zeros_like
    return (tf.where(even, query, zeros(query)), tf.where(even, key, zeros(key)),
            tf.where(even, zeros(value), value))

  def _head(self, theta: Theta, head_input: tf.Tensor):
    """(direction, magnitude signal), each [P], from the head input [rows, P]."""
    def mlp(z):
      hidden = tf.nn.relu(tf.matmul(theta["head/w1"], z, transpose_a=True)
                          + theta["head/b1"][:, None])  # [hidden, P]
      return (tf.matmul(theta["head/w2"], hidden, transpose_a=True)
              + theta["head/b2"][:, None])  # [2, P]
    out = mlp(head_input)
    if not self.config.odd_in_gradient:
      return out[0], out[1]
    flipped = mlp(self.input_parity(self.config.num_layers)[:, None] * head_input)
    return 0.5 * (out[0] - flipped[0]), 0.5 * (out[1] + flipped[1])

  def theta_shapes(self) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every theta entry (the weights-file schema)."""
    c = self.config
    shapes = {}
    for l in range(c.num_layers):
      f = self.layer_input_dim(l)
      shapes[f"cam{l}/query"] = (f, c.num_heads, c.key_dim)
      shapes[f"cam{l}/key"] = (f, c.num_heads, c.key_dim)
      shapes[f"cam{l}/value"] = (f, c.num_heads, c.value_dim)
      shapes[f"cam{l}/log_tau"] = (c.num_heads,)
      shapes[f"cam{l}/projection"] = (
          random_features.num_projections(c.feature_kind, c.num_features), c.key_dim)
    shapes["head/w1"] = (self._head_input_dim, c.hidden_dim)
    shapes["head/b1"] = (c.hidden_dim,)
    shapes["head/w2"] = (c.hidden_dim, 2)  # (direction, magnitude)
    shapes["head/b2"] = (2,)
    shapes["log_step_size"] = ()
    return shapes

  def projections(self) -> Theta:
    """The fixed random-feature projection of every layer (from the seed)."""
    c = self.config
    rows = random_features.num_projections(c.feature_kind, c.num_features)
    return {
        f"cam{l}/projection": random_features.orthogonal_gaussian_projection(
            rows, c.key_dim, seed=[c.projection_seed, l])
        for l in range(c.num_layers)
    }

  def init_theta(self, seed: int, step_size: float = 1e-3,
                 scale: float = 0.1) -> Theta:
    """Random theta for meta-training: small Gaussian weights, zero biases,
    per-head discounts spread evenly over momenta 0.5 .. 0.999."""
    theta = self.projections()
    c = self.config
    momenta = [0.5 + (0.999 - 0.5) * h / max(c.num_heads - 1, 1)
               for h in range(c.num_heads)]
    for i, (name, shape) in enumerate(sorted(self.theta_shapes().items())):
      if name in theta:
        continue
      if name.endswith("/log_tau"):
        theta[name] = tf.constant([math.log(-math.log(b)) for b in momenta], tf.float32)
      elif name == "log_step_size":
        theta[name] = tf.constant(math.log(step_size), tf.float32)
      elif name.split("/")[-1].startswith("b"):
        theta[name] = tf.zeros(shape, tf.float32)
      else:
        theta[name] = scale * tf.random.stateless_normal(shape, [seed, i], dtype=tf.float32)
    return theta

  def hand_set_theta(self, momentum: float = 0.9, step_size: float = 1e-3) -> Theta:
    """A hand-set (not meta-trained) theta that is normalized momentum.

    With zero query and key weights every kernel value phi(0)^T phi(0) is the
    same, so head 0 of layer 0 reads the bias-corrected EMA (rate `momentum`)
    of its value, set to the normalized gradient g / sqrt(v_hat); the head
    passes it through (relu(a) - relu(-a) = a), and the per-tensor RMS
    normalization makes the update
        -step_size * m_hat / rms(m_hat),   m_hat = EMA(g / sqrt(v_hat)) / (1 - momentum^t)
    (with output_normalization "none": -step_size * m_hat, an Adam-like rule).
    Later layers (if any) are zero and unused.
    """
    c = self.config
    if c.hidden_dim < 2:
      raise ValueError("the hand-set theta needs hidden_dim >= 2")
    if not 0.0 < momentum < 1.0:
      raise ValueError(f"momentum must be in (0, 1), got {momentum!r}")
    theta = {name: tf.zeros(shape, tf.float32)
             for name, shape in self.theta_shapes().items()}
    theta.update(self.projections())
    log_tau = [math.log(-math.log(momentum))] * c.num_heads
    for l in range(c.num_layers):
      theta[f"cam{l}/log_tau"] = tf.constant(log_tau, tf.float32)
    value = [[[0.0] * c.value_dim for _ in range(c.num_heads)]
             for _ in range(features.NUM_FEATURES)]
    value[0][0][0] = 1.0  # head 0, value 0 <- normalized gradient
    theta["cam0/value"] = tf.constant(value, tf.float32)
    w1 = [[0.0] * c.hidden_dim for _ in range(self._head_input_dim)]
    readout = features.NUM_FEATURES  # head input row of (value 0, head 0): v * H + h
    w1[readout][0], w1[readout][1] = 1.0, -1.0
    theta["head/w1"] = tf.constant(w1, tf.float32)
    w2 = [[0.0, 0.0] for _ in range(c.hidden_dim)]
    w2[0][0], w2[1][0] = 1.0, -1.0  # direction = relu(a) - relu(-a); magnitude 0
    theta["head/w2"] = tf.constant(w2, tf.float32)
    theta["log_step_size"] = tf.constant(math.log(step_size), tf.float32)
    return theta

  @property
  def has_step_schedule(self) -> bool:
    return self.config.early_boost != 1

  def step_multiplier(self, step, shapes):
    """The early boost's multiplier of the learned step at 1-based `step`
    for a model whose trainable tensors have `shapes` (see
    CoordinateConfig.early_boost): 1.0 (a Python float) when off or exempt."""
    c = self.config
    if c.early_boost == 1 or (c.early_boost_exempt_rank and any(
        len(shape) == c.early_boost_exempt_rank for shape in shapes)):
      return 1.0
    remaining = tf.maximum(0.0, 1.0 - tf.cast(step, tf.float32) / c.early_boost_steps)
    return 1.0 + (c.early_boost - 1.0) * remaining

  # ---------------------------------------------------------------- state
  def init_state(self, param: tf.Tensor) -> CoordinateState:
    """Empty state for a tensor shaped like `param` (any shape, P coordinates)."""
    c = self.config
    size = param.shape.num_elements()
    return CoordinateState(
        second_moment=tf.zeros([size], tf.float32),
        cams=tuple(cam.init([c.num_heads, size], c.num_features, c.value_dim)
                   for _ in range(c.num_layers)),
        adaptation=step_adaptation.init(size) if c.step_adaptation_rate else ())

  # ---------------------------------------------------------------- update
  def apply(self, theta: Theta, state: CoordinateState, grad: tf.Tensor,
            param: tf.Tensor, step, learning_rate=1.0, weight_decay=0.0):
    """One optimizer step for one tensor.

    Args:
      theta: network weights (`theta_shapes`).
      state: this tensor's state (from `init_state` or a previous `apply`).
      grad: gradient, any shape; computed in float32.
      param: the parameter (same shape), used for weight decay.
      step: this step's 1-based count t.
      learning_rate: multiplier of the learned step size.
      weight_decay: decoupled weight decay per unit learning rate.

    Returns:
      (update, new_state): the float32 update to add to `param` (grad's shape)
      and the new state.
    """
    c = self.config
    shape = tf.shape(grad)
    g = tf.reshape(tf.cast(grad, tf.float32), [-1])  # [P]
    g = tf.clip_by_value(g, -features.MAX_ABS_GRADIENT, features.MAX_ABS_GRADIENT)
    second_moment = features.update_second_moment(state.second_moment, g, c.beta2)
    x = features.gradient_features(g, second_moment, step, c.beta2,
                                   c.preprocessing_k)  # [F, P]
    layer_input = x
    cams = []
    for l, memory in enumerate(state.cams):
      w_query, w_key, w_value = self._projection_weights(theta, l)
      query = tf.einsum("fhk,fp->khp", w_query, layer_input)  # [K, H, P]
      key = tf.einsum("fhk,fp->khp", w_key, layer_input)  # [K, H, P]
      value = tf.einsum("fhv,fp->vhp", w_value, layer_input)  # [V, H, P]
      projection = theta[f"cam{l}/projection"]  # [R, K]
      key_features, key_log_scale = random_features.positive_features(
          key, projection, c.feature_kind)  # [M, H, P], [H, P]
      query_features, _ = random_features.positive_features(
          query, projection, c.feature_kind)  # [M, H, P]
      tau = tf.exp(theta[f"cam{l}/log_tau"])[:, None]  # [H, 1]
      memory = cam.update(memory, key_features, key_log_scale, value, tau)
      cams.append(memory)
      readout = cam.read(memory, query_features)  # [V, H, P]
      layer_input = tf.concat(
          [x, tf.reshape(readout, [c.value_dim * c.num_heads, -1])], axis=0)
    direction, magnitude = self._head(theta, layer_input)
    log_step_size = theta["log_step_size"]
    adaptation = ()
    if c.step_adaptation_rate:
      log_gain = step_adaptation.adapt(state.adaptation, g, c.step_adaptation_rate,
                                       c.step_adaptation_bound)
      log_step_size = log_step_size + log_gain
      adaptation = step_adaptation.next_state(direction, log_gain)
    update = normalized_update(direction, magnitude, log_step_size, c.magnitude_range,
                               param, learning_rate, weight_decay,
                               normalize=c.output_normalization == "rms", grad=g,
                               gradient_eps=c.gradient_eps,
                               max_relative_update=c.max_relative_update,
                               relative_update_floor=c.relative_update_floor,
                               relative_update_rank=c.relative_update_rank)
    return tf.reshape(update, shape), CoordinateState(second_moment, tuple(cams), adaptation)
