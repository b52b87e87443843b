"""The interface every learned optimizer network implements (pure functions).

A network holds only its static config. theta is a dict of tensors; a state is a
nest of float32 tensors. Both optimizer front ends and the meta-trainer use only
this interface (state, slot layout, apply), so the coordinate-wise and
tensor-wise Mnemosyne networks, Super-Mnemosyne and the LSTM baseline are
interchangeable.

Two state layouts exist:
  * per coordinate (the default): every leaf's last axis is the tensor's P
    coordinates; the slot is [state_size(), *var_shape];
  * per tensor (`per_tensor_state = True`): leaves of a fixed size whatever the
    tensor; the slot is a flat [floats] vector.
"""

import dataclasses
import functools
from typing import Any, Dict, List, Sequence, Tuple

import tensorflow as tf

from mnemosyne_tf.core import state_packing

Theta = Dict[str, tf.Tensor]


class ConfigDict:
  """Mixin for frozen dataclass configs: to_dict / from_dict (strict).

  Fields named in `omit_if_default` (options added after weights were
  shipped) are left out of to_dict while they have their default value, so
  that the config dicts, and the checksums and caches keyed by them, of
  everything made before the option existed stay the same.
  """

  omit_if_default: Tuple[str, ...] = ()

  def to_dict(self) -> dict:
    values = dataclasses.asdict(self)
    for field in dataclasses.fields(self):
      if field.name in self.omit_if_default and values[field.name] == field.default:
        del values[field.name]
    return values

  @classmethod
  def from_dict(cls, values: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    return cls(**values)


class LearnedOptimizerNetwork:
  """Base class: subclasses define theta_shapes, init_theta, init_state, apply."""

  # Weights-file "network" name of the subclass.
  kind = ""
  # theta entries (by suffix) that are fixed for the life of a state and are
  # never meta-trained.
  fixed_suffixes: Tuple[str, ...] = ()
  # True if a tensor's state has a fixed size whatever the tensor's size.
  per_tensor_state = False

  def __init__(self, config):
    self.config = config

  @functools.cached_property
  def _template(self):
    """The state of a one-coordinate tensor (gives the packing layout; eager,
    so that a first use inside a traced function leaks no graph tensor)."""
    with tf.init_scope():
      return self.init_state(tf.zeros([1]))

  # -------------------------------------------------------------- subclasses
  def theta_shapes(self) -> Dict[str, Tuple[int, ...]]:
    raise NotImplementedError

  def init_theta(self, seed: int) -> Theta:
    raise NotImplementedError

  def init_state(self, param: tf.Tensor) -> Any:
    raise NotImplementedError

  def apply(self, theta: Theta, state, grad, param, step, learning_rate=1.0,
            weight_decay=0.0):
    """-> (update to add to param, new state); see subclasses."""
    raise NotImplementedError

  # -------------------------------------------------------------- shared
  # True if `step_multiplier` depends on the step (a per-model schedule).
  has_step_schedule = False

  def step_multiplier(self, step, shapes):
    """Multiplier of the learned step at 1-based `step` for a model whose
    trainable tensors have `shapes` (a per-model schedule of the rule, e.g.
    coordinate-wise Mnemosyne's early boost); callers pass learning_rate * m
    and weight_decay / m to `apply`, so that weight decay is not scaled.
    1.0 here: no schedule."""
    del step, shapes
    return 1.0

  def trainable_names(self):
    """theta entries the meta-trainer may change."""
    return sorted(n for n in self.theta_shapes() if not n.endswith(self.fixed_suffixes))

  def check_theta(self, theta: Theta, source: str = "theta") -> None:
    """Raises ValueError naming `source` if theta's names or shapes do not fit."""
    expected = self.theta_shapes()
    missing = sorted(set(expected) - set(theta))
    extra = sorted(set(theta) - set(expected))
    if missing or extra:
      raise ValueError(f"{source}: theta does not match the network config "
                       f"(missing {missing}, unexpected {extra})")
    for name, shape in expected.items():
      got = tuple(theta[name].shape)
      if got != tuple(shape):
        raise ValueError(f"{source}: theta[{name!r}] has shape {got}, the config "
                         f"needs {tuple(shape)}")

  def state_size(self) -> int:
    """Optimizer-state floats per parameter coordinate (per-coordinate layout)."""
    if self.per_tensor_state:
      raise ValueError(f"the {self.kind!r} network keeps a state per tensor, not per "
                       "coordinate: use state_floats(shape)")
    return state_packing.state_size(self._template)

  def slot_shape(self, shape: Sequence[int]) -> List[int]:
    """Shape of the one float32 slot holding the state of a tensor of `shape`."""
    if self.per_tensor_state:
      return [state_packing.flat_size(self._template)]
    return [self.state_size()] + list(shape)

  def state_floats(self, shape: Sequence[int]) -> int:
    """Optimizer-state floats kept for a tensor of `shape`."""
    size = 1
    for dim in self.slot_shape(shape):
      size *= int(dim)
    return size

  def pack_state(self, state, shape) -> tf.Tensor:
    """State of a tensor of `shape` -> its slot value (`slot_shape(shape)`)."""
    if self.per_tensor_state:
      return state_packing.pack_flat(state)
    return state_packing.pack(state, shape)

  def unpack_state(self, packed: tf.Tensor, shape):
    """Inverse of `pack_state` for a tensor of `shape`."""
    del shape  # both layouts are recovered from the template
    if self.per_tensor_state:
      return state_packing.unpack_flat(packed, self._template)
    return state_packing.unpack(packed, self._template)

  def guarded_apply(self, theta: Theta, state, grad, param, step, learning_rate=1.0,
                    weight_decay=0.0):
    """`apply`, skipped for a non-finite gradient.

    Policy: if any entry of `grad` is NaN or Inf the tensor is skipped this step:
    the update is exactly zero and the state is returned unchanged (no NaN can
    reach the parameter or the memory). Other tensors are unaffected.
    """
    update, new_state = self.apply(theta, state, grad, param, step,
                                   learning_rate, weight_decay)
    finite = tf.reduce_all(tf.math.is_finite(grad))
    update = tf.where(finite, update, tf.zeros_like(update))
    new_state = tf.nest.map_structure(
        lambda new, old: tf.where(finite, new, old), new_state, state)
    return update, new_state
