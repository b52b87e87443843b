"""Mnemosyne as a Keras 3 optimizer: `model.compile(optimizer=Mnemosyne())`.

A thin shell over `rule.LearnedRule` (itself over the pure `core/`): `build`
creates one float32 slot per model variable, in variable order, holding that
variable's packed CAM state; `update_step` calls the core and assigns.
"""

import keras
import tensorflow as tf

from mnemosyne_tf import rule as rule_lib
from mnemosyne_tf import weights as weights_lib


class LearnedOptimizer(keras.optimizers.Optimizer):
  """A Keras 3 optimizer running any learned-optimizer weights file.

  The network (coordinate-wise or tensor-wise Mnemosyne, Super-Mnemosyne or
  the LSTM baseline) comes from the weights file. See `Mnemosyne` for the
  arguments; `weights` has no default; `network_kind`, if given, is the
  network the weights must be for; `network_overrides`, if given, replaces
  network config fields that leave theta's shapes unchanged (e.g.
  Super-Mnemosyne's policy: {"small_mode": ..., "threshold": ...}).
  """

  def __init__(self, weights, learning_rate=1.0, weights_sha256=None, network_kind=None,
               network_overrides=None, weight_decay=None,
               clipnorm=None, clipvalue=None, global_clipnorm=None,
               use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
               loss_scale_factor=None, gradient_accumulation_steps=None,
               name="learned_optimizer", **kwargs):
    # Everything is checked before the base class creates its first variable.
    rule_lib.check_arguments(learning_rate, weights, weight_decay)
    if isinstance(learning_rate, int):
      learning_rate = float(learning_rate)
    rule = rule_lib.LearnedRule(weights, weights_sha256, network_kind, network_overrides)
    super().__init__(
        learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
        clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
        ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
        loss_scale_factor=loss_scale_factor,
        gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
    self._rule = rule

  @property
  def state_floats_per_parameter(self):
    """Optimizer-state float32 values kept per model parameter, for networks
    with a per-coordinate state; None if the state is per tensor or depends on
    the tensor (tensor-wise and Super-Mnemosyne: see `state_floats`)."""
    net = self._rule.network
    return None if net.kind == "super" or net.per_tensor_state else net.state_size()

  def state_floats(self, shape) -> int:
    """Optimizer-state float32 values kept for a variable of `shape`."""
    return self._rule.network.state_floats(shape)

  @property
  def provenance(self) -> dict:
    """How the weights were made (their file's provenance record)."""
    return dict(self._rule.provenance)

  @property
  def weights_sha256(self) -> str:
    """SHA-256 of the arrays of the weights this optimizer runs (with
    `network_config`, what identifies its behaviour: the checksum does not
    cover the file's config)."""
    return self._rule.sha256

  @property
  def network_config(self) -> dict:
    """The network's config (the weights file's, with any overrides)."""
    return self._rule.network.config.to_dict()

  def build(self, var_list):
    if self.built:
      return
    super().build(var_list)
    strategy = tf.distribute.get_strategy()
    self._model_shapes = tuple(tuple(var.shape) for var in var_list)
    self._states = []
    for var in var_list:
      shape = tuple(var.shape)
      # Keras variables wrap a tf.Variable; plain tf.Variables (tf.Module, tf_keras
      # models in a custom loop) are their own.
      tf_var = var.value if isinstance(var, keras.Variable) else var
      base = var.path if hasattr(var, "path") else var.name.split(":")[0]
      with strategy.extended.colocate_vars_with(tf_var):
        self._states.append(self.add_variable(
            shape=self._rule.slot_shape(shape),
            initializer=lambda s, dtype=None, shape=shape: self._rule.initial_slot(shape),
            dtype="float32", name=f"{base.replace('/', '_')}_learned_state"))

  def update_step(self, gradient, variable, learning_rate):
    state = self._states[self._get_variable_index(variable)]
    weight_decay = self.weight_decay if (
        self.weight_decay and self._use_weight_decay(variable)) else 0.0
    update, new_state = self._rule.step(
        tf.convert_to_tensor(state), gradient, tf.convert_to_tensor(variable),
        self.iterations + 1, learning_rate, weight_decay, self._model_shapes)
    self.assign(state, new_state)
    self.assign_add(variable, update)

  def _apply_weight_decay(self, variables):
    # Weight decay is part of `update_step` (so a skipped step skips it too).
    return

  def get_config(self):
    config = super().get_config()
    config.update({"weights": self._rule.weights, "weights_sha256": self._rule.sha256,
                   "network_kind": self._rule.network.kind,
                   "network_overrides": self._rule.config_overrides})
    return config


keras.saving.register_keras_serializable(package="mnemosyne_tf")(LearnedOptimizer)


@keras.saving.register_keras_serializable(package="mnemosyne_tf")
class Mnemosyne(LearnedOptimizer):
  """The Mnemosyne learned optimizer (Jain, Choromanski et al., NeurIPS 2023).

  A Compact Associative Memory (discounted Performer attention in O(1) memory)
  keeps the whole gradient history: of each coordinate (mode "coordinate"), or
  of a few meta-tokens that a Hierarchical Pooling Encoder summarizes each
  tensor into (mode "tensor": a constant-size state per tensor); mode "super"
  picks one of the two per tensor by its size. A network with meta-learned
  weights maps the memory to an update, normalized per tensor so that its RMS
  is `learning_rate * step_size` times a learned factor bounded in [e^-a, e^a],
  where step_size and a are part of the weights.

  There is no learning rate to tune: `learning_rate` is a dimensionless
  multiplier of the learned step, 1.0 by default. Pass a schedule (e.g.
  `keras.optimizers.schedules.CosineDecay(1.0, decay_steps)`) to anneal it.
  With weights that bound some tensors' steps (the default bounds attention
  projections' relative steps), `learning_rate` does not change a step while
  its bound binds.
  `weight_decay` is decoupled and per step: a variable shrinks by
  `learning_rate * weight_decay * variable`, inside the same guarded update.

  Non-finite gradients: if a variable's gradient has any NaN or Inf, that
  variable and its state are left unchanged this step (others still update).

  Args:
    learning_rate: multiplier of the learned step size (float > 0, schedule or
      callable).
    weights: a shipped weights name (see `mnemosyne_tf.weights.SHIPPED`) or the
      path of a weights file written by the meta-training binary; None: the
      mode's shipped default (`mnemosyne_tf.weights.DEFAULT_WEIGHTS_BY_MODE`).
    mode: "coordinate" (coordinate-wise Mnemosyne), "tensor" (tensor-wise:
      HPE + CAM + SPE) or "super" (Super-Mnemosyne: one of the two per tensor).
    weights_sha256: if given, the weights must have this checksum (set by
      `get_config`, so a restored optimizer refuses changed weights).
    super_small_mode, super_threshold: mode "super" only: tensors with fewer
      than `super_threshold` coordinates use mode `super_small_mode` ("tensor"
      or "coordinate"), the others the other mode. None: the weights' own
      policy (see `core/super_network.py`).
    weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
    ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps,
    name: as for every Keras optimizer.
  """

  def __init__(self, learning_rate=1.0, weights=None, mode="coordinate",
               weights_sha256=None, super_small_mode=None, super_threshold=None,
               name="mnemosyne", **kwargs):
    # Checked before any variable exists.
    network_kind = rule_lib.network_for_mode(mode)
    overrides = rule_lib.super_policy(mode, super_small_mode, super_threshold)
    super().__init__(weights=rule_lib.default_weights(mode) if weights is None else weights,
                     learning_rate=learning_rate, weights_sha256=weights_sha256,
                     network_kind=network_kind, network_overrides=overrides or None,
                     name=name, **kwargs)
    self.mode = mode
    self.super_small_mode = super_small_mode
    self.super_threshold = super_threshold

  def get_config(self):
    config = super().get_config()
    del config["network_kind"], config["network_overrides"]  # implied by these:
    config.update({"mode": self.mode, "super_small_mode": self.super_small_mode,
                   "super_threshold": self.super_threshold})
    return config
