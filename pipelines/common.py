"""What every pipeline experiment shares: the experiment config and the optimizer choice.

An experiment config is official's `ExperimentConfig` whose trainer carries
`MnemosyneOptimizationConfig` (official's `OptimizationConfig` plus the
`mnemosyne` optimizer type), so that a YAML file or `--params_override` selects
Mnemosyne in any mode, or Adam, through `trainer.optimizer_config` alone:

    trainer:
      optimizer_config:
        optimizer: {type: mnemosyne, mnemosyne: {mode: coordinate}}
        learning_rate: {type: constant, constant: {learning_rate: 1.0}}

Official's `Task.create_optimizer` builds it through its `OptimizerFactory`, where
importing `mnemosyne_tf.tf_keras_optimizer` registered the type.
"""

import dataclasses

from official.core import config_definitions as cfg
from official.modeling.optimization.configs import optimization_config

from mnemosyne_tf.tf_keras_optimizer import MnemosyneOptimizationConfig

OPTIMIZERS = ("mnemosyne", "adam", "adamw")


@dataclasses.dataclass
class TrainerConfig(cfg.TrainerConfig):
  """official's TrainerConfig whose optimizer may be `mnemosyne`."""
  optimizer_config: MnemosyneOptimizationConfig = dataclasses.field(
      default_factory=MnemosyneOptimizationConfig)


@dataclasses.dataclass
class ExperimentConfig(cfg.ExperimentConfig):
  """official's ExperimentConfig with the Mnemosyne-aware trainer."""
  trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)


def optimization(optimizer: str = "mnemosyne", learning_rate: float = None,
                 mode: str = "coordinate", weights: str = None,
                 weight_decay: float = 0.0) -> MnemosyneOptimizationConfig:
  """An optimization config: Mnemosyne (multiplier 1.0 by default) or Adam(W).

  For Mnemosyne `learning_rate` is the multiplier of the learned step (1.0: no
  tuning); for Adam/AdamW it is the learning rate (default 1e-3).
  """
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
  if optimizer == "mnemosyne":
    branch = {"mode": mode, "weight_decay": weight_decay}
    if weights is not None:
      branch["weights"] = weights
    rate = 1.0 if learning_rate is None else learning_rate
  else:
    branch = {}
    if optimizer == "adamw":
      branch["weight_decay_rate"] = weight_decay
    rate = 1e-3 if learning_rate is None else learning_rate
  return MnemosyneOptimizationConfig({
      "optimizer": {"type": optimizer, optimizer: branch},
      "learning_rate": {"type": "constant", "constant": {"learning_rate": rate}}})


__all__ = ["ExperimentConfig", "TrainerConfig", "optimization", "OPTIMIZERS",
           "optimization_config"]
