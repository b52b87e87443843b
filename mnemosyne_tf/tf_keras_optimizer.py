"""Mnemosyne for tf_keras (Keras 2) and tf-models-official's OptimizerFactory.

tf-models-official builds tf_keras optimizers, and tf_keras `compile()` rejects
Keras 3 optimizers, so this second front end wraps the same `rule.LearnedRule`
(same core, same slot layout, same updates) in the tf_keras optimizer API.

`register_with_official()` (run on import) adds the optimizer type "mnemosyne" to
official's OptimizerFactory; select it with `MnemosyneOptimizationConfig`:

    config = MnemosyneOptimizationConfig({
        "optimizer": {"type": "mnemosyne", "mnemosyne": {}},
        "learning_rate": {"type": "constant", "constant": {"learning_rate": 1.0}}})
    factory = optimizer_factory.OptimizerFactory(config)
    opt = factory.build_optimizer(factory.build_learning_rate())
"""

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras

from official.modeling.optimization import optimizer_factory
from official.modeling.optimization.configs import optimization_config
from official.modeling.optimization.configs import optimizer_config

from mnemosyne_tf import rule as rule_lib

OFFICIAL_TYPE = "mnemosyne"


@tf_keras.utils.register_keras_serializable(package="mnemosyne_tf")
class MnemosyneTfKeras(tf_keras.optimizers.Optimizer):
  """tf_keras front end of `mnemosyne_tf.Mnemosyne` (same arguments and meaning;
  "" or 0 for an optional argument mean None, as official's configs give them).

  `learning_rate` multiplies the learned step size (default 1.0, no tuning);
  weight decay is decoupled and applied inside the guarded update; a variable
  with a NaN/Inf gradient is left unchanged with its state.
  """

  def __init__(self, learning_rate=1.0, weights=None, mode="coordinate",
               weights_sha256=None, super_small_mode=None, super_threshold=None,
               weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
               use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
               jit_compile=True, name="mnemosyne", **kwargs):
    # official's factory passes every config field: "" and 0 mean "not set".
    super_small_mode = super_small_mode or None
    super_threshold = super_threshold or None
    network_kind = rule_lib.network_for_mode(mode)
    overrides = rule_lib.super_policy(mode, super_small_mode, super_threshold)
    if not weights:
      weights = rule_lib.default_weights(mode)
    rule_lib.check_arguments(learning_rate, weights, weight_decay)
    self._rule = rule_lib.LearnedRule(weights, weights_sha256, network_kind,
                                      overrides or None)
    super().__init__(
        name=name, weight_decay=weight_decay, clipnorm=clipnorm,
        clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
        ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
        jit_compile=jit_compile, **kwargs)
    self._learning_rate = self._build_learning_rate(learning_rate)
    self.mode = mode
    self.super_small_mode = super_small_mode
    self.super_threshold = super_threshold

  @property
  def state_floats_per_parameter(self):
    """As `Mnemosyne.state_floats_per_parameter` (None for a per-tensor state)."""
    net = self._rule.network
    return None if net.kind == "super" or net.per_tensor_state else net.state_size()

  def state_floats(self, shape) -> int:
    """Optimizer-state float32 values kept for a variable of `shape`."""
    return self._rule.network.state_floats(shape)

  def build(self, var_list):
    super().build(var_list)
    if getattr(self, "_built", False):
      return
    self._built = True
    strategy = tf.distribute.get_strategy()
    self._model_shapes = tuple(tuple(var.shape) for var in var_list)
    self._states = []
    for var in var_list:
      shape = tuple(var.shape)
      with strategy.extended.colocate_vars_with(var):
        self._states.append(self.add_variable(
            shape=self._rule.slot_shape(shape),
            dtype=tf.float32,
            initializer=lambda s, dtype=None, shape=shape: self._rule.initial_slot(shape),
            name=f"mnemosyne_state/{var._shared_name}"))

  def update_step(self, gradient, variable):
    state = self._states[self._index_dict[self._var_key(variable)]]
    weight_decay = self.weight_decay if (
        self.weight_decay and self._use_weight_decay(variable)) else 0.0
    update, new_state = self._rule.step(
        state, gradient, variable, self.iterations + 1, self.learning_rate,
        weight_decay, self._model_shapes)
    state.assign(new_state)
    variable.assign_add(update)

  def _apply_weight_decay(self, variables):
    # Weight decay is part of `update_step` (so a skipped step skips it too).
    return

  def get_config(self):
    config = super().get_config()
    config.update({
        "learning_rate": _plain(self._serialize_hyperparameter(self._learning_rate)),
        "weights": self._rule.weights, "mode": self.mode,
        "weights_sha256": self._rule.sha256, "super_small_mode": self.super_small_mode,
        "super_threshold": self.super_threshold})
    return config


def _plain(value):
  """NumPy scalars -> Python floats, so configs stay JSON/YAML-serializable."""
  return value.item() if isinstance(value, np.generic) else value


@dataclasses.dataclass
class MnemosyneConfig(optimizer_config.BaseOptimizerConfig):
  """Official optimizer config of Mnemosyne (fields = constructor arguments).

  Attributes:
    name: optimizer name.
    weights: shipped weights name or weights file path; "" = the mode's
      shipped default.
    mode: "coordinate", "tensor" or "super".
    weight_decay: decoupled weight decay per step (0 for none).
    super_small_mode: mode "super": the mode of small tensors ("" = the
      weights' own policy).
    super_threshold: mode "super": the size from which a tensor is large
      (0 = the weights' own policy).
  """
  name: str = "mnemosyne"
  weights: str = ""
  mode: str = "coordinate"
  weight_decay: float = 0.0
  super_small_mode: str = ""
  super_threshold: int = 0


@dataclasses.dataclass
class MnemosyneOptimizerConfig(optimization_config.OptimizerConfig):
  """official's optimizer oneof, plus `mnemosyne`."""
  mnemosyne: MnemosyneConfig = dataclasses.field(default_factory=MnemosyneConfig)


@dataclasses.dataclass
class MnemosyneOptimizationConfig(optimization_config.OptimizationConfig):
  """official's OptimizationConfig whose optimizer oneof includes `mnemosyne`."""
  optimizer: MnemosyneOptimizerConfig = dataclasses.field(
      default_factory=MnemosyneOptimizerConfig)


def register_with_official() -> None:
  """Registers type "mnemosyne" in OptimizerFactory (legacy and new tables)."""
  for use_legacy, table in ((True, optimizer_factory.LEGACY_OPTIMIZERS_CLS),
                            (False, optimizer_factory.NEW_OPTIMIZERS_CLS)):
    if table.get(OFFICIAL_TYPE) is not MnemosyneTfKeras:
      table.pop(OFFICIAL_TYPE, None)
      optimizer_factory.register_optimizer_cls(
          OFFICIAL_TYPE, MnemosyneTfKeras, use_legacy_optimizer=use_legacy)


register_with_official()
