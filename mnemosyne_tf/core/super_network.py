"""Super-Mnemosyne: coordinate-wise or tensor-wise Mnemosyne, chosen per tensor.

The paper (arXiv 2302.01128) combines its two modes in one optimizer; the rule
here is a documented, configurable policy on a tensor's size (known statically):

    mode(tensor) = small_mode          if size(tensor) <  threshold
                   the other mode      otherwise

`small_mode = "tensor"` is the paper's choice (tensor-wise for small tensors,
coordinate-wise for large ones); `small_mode = "coordinate"` is the reverse,
which puts the constant-size tensor-wise state on the large tensors (where it
saves the memory). Both sub-networks keep their own theta (prefixed
"coordinate/" and "tensor/") and their own state layout, so a tensor's slot is
exactly what its mode's network would give it.
"""

import dataclasses
from typing import Dict, Tuple

import tensorflow as tf

from mnemosyne_tf.core import learned_optimizer
from mnemosyne_tf.core import network
from mnemosyne_tf.core import tensor_network

Theta = learned_optimizer.Theta
SMALL_MODES = ("tensor", "coordinate")
PARTS = ("coordinate", "tensor")


@dataclasses.dataclass(frozen=True)
class SuperConfig(learned_optimizer.ConfigDict):
  """Super-Mnemosyne: the two sub-network configs and the policy.

  Attributes:
    coordinate: CoordinateConfig fields (overrides of its defaults).
    tensor: TensorConfig fields (overrides of its defaults).
    small_mode: the mode of tensors with fewer than `threshold` coordinates
      ("tensor": the paper's policy; "coordinate": the reverse).
    threshold: the size (number of coordinates) from which a tensor is large.
  """
  coordinate: dict = dataclasses.field(default_factory=dict)
  tensor: dict = dataclasses.field(default_factory=dict)
  small_mode: str = "tensor"
  threshold: int = 4096

  def __post_init__(self):
    if self.small_mode not in SMALL_MODES:
      raise ValueError(f"SuperConfig.small_mode must be one of {SMALL_MODES}, got "
                       f"{self.small_mode!r}")
    if (not isinstance(self.threshold, int) or isinstance(self.threshold, bool)
        or self.threshold < 1):
      raise ValueError(f"SuperConfig.threshold must be an integer >= 1, got "
                       f"{self.threshold!r}")
    for part in PARTS:
      if not isinstance(getattr(self, part), dict):
        raise ValueError(f"SuperConfig.{part} must be a mapping of config fields")
    coordinate, _ = self.sub_configs()  # validates both
    if coordinate.early_boost != 1:
      raise ValueError("SuperConfig.coordinate: early_boost is not available inside "
                       "Super-Mnemosyne (it would be ignored); leave it at 1")

  def sub_configs(self):
    return (network.CoordinateConfig.from_dict(self.coordinate),
            tensor_network.TensorConfig.from_dict(self.tensor))


class SuperNetwork(learned_optimizer.LearnedOptimizerNetwork):
  """Routes each tensor to the coordinate-wise or the tensor-wise network."""

  kind = "super"
  fixed_suffixes = network.FIXED_SUFFIXES + tensor_network.TensorWiseNetwork.fixed_suffixes

  def __init__(self, config: SuperConfig):
    super().__init__(config)
    coordinate_config, tensor_config = config.sub_configs()
    self.parts = {"coordinate": network.CoordinateWiseNetwork(coordinate_config),
                  "tensor": tensor_network.TensorWiseNetwork(tensor_config)}

  # ---------------------------------------------------------------- policy
  def mode_for(self, shape) -> str:
    """The mode of a tensor of static `shape` under the policy."""
    size = 1
    for dim in shape:
      if dim is None:
        raise ValueError("Super-Mnemosyne needs tensors of static shape")
      size *= int(dim)
    large = "coordinate" if self.config.small_mode == "tensor" else "tensor"
    return self.config.small_mode if size < self.config.threshold else large

  def _part(self, shape):
    mode = self.mode_for(shape)
    return mode, self.parts[mode]

  @staticmethod
  def sub_theta(theta: Theta, mode: str) -> Theta:
    prefix = mode + "/"
    return {n[len(prefix):]: t for n, t in theta.items() if n.startswith(prefix)}

  @staticmethod
  def combine(thetas: Dict[str, Theta]) -> Theta:
    """{"coordinate": theta_c, "tensor": theta_t} -> the super theta."""
    return {f"{mode}/{name}": value for mode in PARTS for name, value in thetas[mode].items()}

  # ---------------------------------------------------------------- theta
  def theta_shapes(self) -> Dict[str, Tuple[int, ...]]:
    return {f"{mode}/{name}": shape for mode, part in self.parts.items()
            for name, shape in part.theta_shapes().items()}

  def init_theta(self, seed: int, step_size: float = 1e-3) -> Theta:
    return self.combine({mode: part.init_theta(seed, step_size=step_size)
                         for mode, part in self.parts.items()})

  def hand_set_theta(self, step_size: float = 1e-3) -> Theta:
    """Coordinate part: normalized momentum (hand-set); tensor part: its
    initial theta (normalized SGD head)."""
    return self.combine({
        "coordinate": self.parts["coordinate"].hand_set_theta(step_size=step_size),
        "tensor": self.parts["tensor"].init_theta(0, step_size=step_size)})

  # ---------------------------------------------------------------- state
  def init_state(self, param: tf.Tensor):
    return self._part(param.shape)[1].init_state(param)

  def state_size(self) -> int:
    raise ValueError("Super-Mnemosyne's state layout depends on each tensor's mode: "
                     "use state_floats(shape)")

  def slot_shape(self, shape):
    return self._part(shape)[1].slot_shape(shape)

  def pack_state(self, state, shape):
    return self._part(shape)[1].pack_state(state, shape)

  def unpack_state(self, packed, shape):
    return self._part(shape)[1].unpack_state(packed, shape)

  # ---------------------------------------------------------------- update
  def apply(self, theta: Theta, state, grad, param, step, learning_rate=1.0,
            weight_decay=0.0):
    """The update of the tensor's mode (`mode_for(grad.shape)`)."""
    mode, part = self._part(grad.shape)
    return part.apply(self.sub_theta(theta, mode), state, grad, param, step,
                      learning_rate, weight_decay)
