"""The framework-neutral optimizer rule both front ends share.

`LearnedRule` turns a weights file into its network (coordinate-wise or
tensor-wise Mnemosyne, Super-Mnemosyne or the LSTM baseline, by the file's
"network" field) plus theta (as constants: the optimizer never trains theta),
gives the layout of the one float32 slot each model variable gets (the
network's `slot_shape`: [state_size, *var.shape] per coordinate, or a flat
vector for a per-tensor state), and performs one guarded step on that slot. The Keras 3 (`optimizer.py`) and tf_keras
(`tf_keras_optimizer.py`) classes only create the slots and assign the results.
"""

import functools
import math
import numbers

import tensorflow as tf

from mnemosyne_tf import weights as weights_lib
from mnemosyne_tf.baselines import lstm
from mnemosyne_tf.core import network
from mnemosyne_tf.core import super_network
from mnemosyne_tf.core import tensor_network

# weights-file network name -> (config class, network class)
NETWORKS = {
    "coordinate": (network.CoordinateConfig, network.CoordinateWiseNetwork),
    "tensor": (tensor_network.TensorConfig, tensor_network.TensorWiseNetwork),
    "super": (super_network.SuperConfig, super_network.SuperNetwork),
    "lstm": (lstm.LSTMConfig, lstm.LSTMNetwork),
}
# Mnemosyne's modes -> the network each needs (its default weights:
# weights.DEFAULT_WEIGHTS_BY_MODE).
MODES = {"coordinate": "coordinate", "tensor": "tensor", "super": "super"}


def build_network(kind: str, config: dict):
  """The network of a weights file's `network` name and config dict."""
  if kind not in NETWORKS:
    raise ValueError(f"unknown network {kind!r}; known: {sorted(NETWORKS)}")
  config_cls, network_cls = NETWORKS[kind]
  return network_cls(config_cls.from_dict(config))


def network_for_mode(mode: str) -> str:
  """The network a Mnemosyne mode needs (ValueError for an unknown mode)."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {tuple(MODES)}, got {mode!r}")
  return MODES[mode]


def default_weights(mode: str) -> str:
  """The shipped weights `Mnemosyne(mode=mode)` loads when given none."""
  network_for_mode(mode)
  if mode not in weights_lib.DEFAULT_WEIGHTS_BY_MODE:
    raise ValueError(f"no shipped weights for mode {mode!r}: pass weights= (a file made "
                     "by python -m mnemosyne_tf.meta.train)")
  return weights_lib.DEFAULT_WEIGHTS_BY_MODE[mode]


def super_policy(mode: str, small_mode, threshold) -> dict:
  """Config overrides of Super-Mnemosyne's policy (ValueError if invalid or if
  given for another mode); {} when both are None (the weights' own policy)."""
  overrides = {k: v for k, v in (("small_mode", small_mode), ("threshold", threshold))
               if v is not None}
  if overrides and mode != "super":
    raise ValueError(f"super_small_mode / super_threshold apply only to mode='super', "
                     f"not mode={mode!r}")
  if overrides:
    super_network.SuperConfig(**overrides)  # validates the values
  return overrides


def check_arguments(learning_rate, weights, weight_decay):
  """Validates the learned optimizers' own constructor arguments (ValueError)."""
  weights_lib.resolve(weights)
  if isinstance(learning_rate, bool) or (
      not isinstance(learning_rate, numbers.Real) and not callable(learning_rate)):
    raise ValueError("learning_rate must be a positive float multiplier, a "
                     f"LearningRateSchedule or a callable, got {learning_rate!r}")
  if isinstance(learning_rate, numbers.Real) and not (
      math.isfinite(learning_rate) and learning_rate > 0):
    raise ValueError(f"learning_rate must be a finite float > 0, got {learning_rate!r}")
  if weight_decay is not None and (
      isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real)
      or not math.isfinite(weight_decay) or weight_decay < 0):
    raise ValueError(f"weight_decay must be None or a float >= 0, got {weight_decay!r}")


class LearnedRule:
  """Network + theta loaded from `weights`, and the per-variable step.

  Args:
    weights: shipped name or path.
    expected_sha256: if given, the weights must have this checksum.
    network_kind: if given, the weights must be for this network.
    config_overrides: network config fields to replace (only ones that leave
      theta's shapes unchanged, e.g. Super-Mnemosyne's policy).
  """

  def __init__(self, weights: str, expected_sha256: str = None, network_kind: str = None,
               config_overrides: dict = None):
    loaded = weights_lib.load_weights(weights)
    if expected_sha256 is not None and loaded.sha256 != expected_sha256:
      raise weights_lib.WeightsError(
          f"weights {weights!r} ({loaded.path}) have sha256 {loaded.sha256}, but "
          f"the optimizer config expects {expected_sha256}: the weights changed "
          "since the optimizer was saved")
    if network_kind is not None and loaded.network != network_kind:
      raise weights_lib.WeightsError(
          f"weights file {loaded.path!r} is for network {loaded.network!r}, not "
          f"{network_kind!r}")
    try:
      self.network = build_network(loaded.network,
                                   dict(loaded.config, **(config_overrides or {})))
      self.network.check_theta(loaded.theta, source=f"weights file {loaded.path!r}")
    except (TypeError, ValueError) as e:
      raise weights_lib.WeightsError(
          f"weights file {loaded.path!r} does not match its config: {e}") from e
    self.weights = weights
    self.config_overrides = dict(config_overrides) if config_overrides else None
    self.sha256 = loaded.sha256
    self.provenance = loaded.provenance
    self.theta = {name: tf.constant(value, tf.float32)
                  for name, value in loaded.theta.items()}

  def slot_shape(self, var_shape):
    return self.network.slot_shape(var_shape)

  def initial_slot(self, var_shape) -> tf.Tensor:
    """The packed empty state for a variable of `var_shape`."""
    state = self.network.init_state(tf.zeros(var_shape))
    return self.network.pack_state(state, var_shape)

  def step(self, slot, grad, param, step, learning_rate, weight_decay, model_shapes=None):
    """One guarded update of one variable.

    Args:
      slot: the variable's packed state (value).
      grad: its gradient (dense or tf.IndexedSlices; any float dtype).
      param: its value.
      step: 1-based step count.
      learning_rate: the multiplier (tensor).
      weight_decay: decoupled weight decay (0 for none).
      model_shapes: the shapes of all the variables the optimizer updates
        (the network's per-model schedule, `step_multiplier`, depends on
        them); may be omitted for networks without one (ValueError
        otherwise).

    Returns:
      (update in param's dtype, new packed slot).
    """
    if isinstance(grad, tf.IndexedSlices):
      # Dense semantics: rows without a gradient see g = 0 this step (their
      # memories decay), exactly as if the gradient had been dense.
      grad = tf.convert_to_tensor(grad)
    # Values, never variables: a traced function keys its cache on the
    # arguments' specs, and a distributed variable's spec can stand for another
    # variable of the same shape (under (MultiWorker)MirroredStrategy one
    # variable was then updated with another's values; optimizer_distribute_test).
    slot, grad, param = (tf.convert_to_tensor(x) for x in (slot, grad, param))
    step = tf.cast(step, tf.float32)
    if model_shapes is None and self.network.has_step_schedule:
      raise ValueError(f"weights {self.weights!r} have a per-model step schedule "
                       "(early_boost): LearnedRule.step needs model_shapes")
    multiplier = self.network.step_multiplier(step, model_shapes or ())
    # Weight decay stays learning_rate * weight_decay per step.
    return self._traced_step(slot, grad, param, step,
                             tf.cast(learning_rate, tf.float32) * multiplier,
                             tf.cast(weight_decay, tf.float32) / multiplier)

  @functools.cached_property
  def _traced_step(self):
    """`_pure_step` as a tf.function: traced once per (shape, dtype) of the
    variables, not once per variable (a model's many same-shaped variables
    share one trace; inside an XLA-compiled train step it is inlined)."""
    return tf.function(self._pure_step)

  def _pure_step(self, slot, grad, param, step, learning_rate, weight_decay):
    state = self.network.unpack_state(slot, param.shape)
    update, new_state = self.network.guarded_apply(
        self.theta, state, grad, param, step, learning_rate, weight_decay)
    new_slot = self.network.pack_state(new_state, param.shape)
    return tf.cast(update, param.dtype), new_slot
