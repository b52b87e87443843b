"""The interface every learned optimizer network implements (pure functions).

A network holds only its static config. theta is a dict of tensors; a state is a
nest of float32 tensors whose last axis is the tensor's P coordinates. Both
optimizer front ends and the meta-trainer use only this interface, so the
coordinate-wise Mnemosyne network and the LSTM baseline are interchangeable.
"""

import dataclasses
from typing import Any, Dict, Tuple

import tensorflow as tf

from mnemosyne_tf.core import state_packing

Theta = Dict[str, tf.Tensor]


class ConfigDict:
  """Mixin for frozen dataclass configs: to_dict / from_dict (strict)."""

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

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

  def __init__(self, config):
    self.config = config
    self._template = self.init_state(tf.zeros([1]))

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
    """Optimizer-state floats per parameter coordinate."""
    return state_packing.state_size(self._template)

  def pack_state(self, state, shape) -> tf.Tensor:
    """State -> one float32 tensor [state_size(), *shape] (the slot layout)."""
    return state_packing.pack(state, shape)

  def unpack_state(self, packed: tf.Tensor):
    """Inverse of `pack_state`."""
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
