"""Meta-training configuration: a YAML file checked completely before anything runs."""

import dataclasses
import math
import typing
from typing import Tuple

import yaml

from mnemosyne_tf import rule
from mnemosyne_tf.meta import tasks as tasks_lib

ESTIMATORS = ("gradient", "es")
INITS = ("hand_set", "random", "weights")
HAND_SET_NETWORKS = ("coordinate", "super")
CALIBRATION_CRITERIA = ("mean_log_loss", "adam_rank")


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
  """What the meta-training binary does.

  Attributes:
    network: learned optimizer network: "coordinate" (Mnemosyne) or "lstm".
    network_config: overrides of the network's config fields.
    init: "hand_set" (start from normalized momentum; networks coordinate
      and super), "random", or "weights" (start from `init_weights`).
    init_weights: with init "weights": a shipped weights name or a weights file
      for this network whose theta fits this network config (to continue
      meta-training, e.g. under a changed gradient_eps); for
      network "super" also a mapping {coordinate: name-or-path, tensor:
      name-or-path} that starts each part from its own mode's weights.
    init_step_size: the learned step size a random coordinate init starts from.
    init_noise: standard deviation of Gaussian noise added to the initial
      query and key weights (with init "hand_set" they are exactly zero, a
      saddle of the hyperbolic kernel where their gradient vanishes).
    seed: seed of everything (tasks, batches, inits, augmentation, ES noise).
    tasks: meta-training tasks (names from tasks.META_TRAIN; held-out refused;
      default tasks.DEFAULT_TASKS, the first seven).
    horizon: optimizee steps of one trajectory before it restarts from a new
      initialization (the meta-training horizon).
    unroll: optimizee steps per truncated segment (one meta-gradient each);
      must divide horizon.
    max_horizon: 0, or a length > horizon: then every trajectory's length is
      drawn log-uniformly from [horizon, max_horizon] (whole segments) when it
      starts, so that the meta-loss also sees late training (against the
      short-horizon bias) at no extra cost per meta-step.
    meta_loss_floor: the meta-loss averages log(max(loss, floor)); 0 means no
      floor (a loss of exactly 0 then makes the segment's meta-loss -inf and
      the segment is dropped).
    meta_steps: meta-optimizer steps (each advances every task by one segment);
      0 (only with a calibration) exports the initial theta with its step
      size calibrated, a baseline for what meta-training adds.
    meta_learning_rate: Adam step size on theta.
    meta_grad_clip: global-norm clip of the meta-gradient.
    meta_grad_task_normalization: average the tasks' meta-gradients each
      divided by its own global norm (every task then weighs the same in the
      direction of the meta-step, whatever the scale of its log-loss
      gradient), instead of the plain average. metrics.jsonl records each
      task's norm either way (per_task_grad_norm).
    estimator: "gradient" (backprop through the unroll, first-order in the
      optimizee gradients) or "es" (antithetic evolution strategies).
    second_order: with estimator "gradient": also differentiate through the
      optimizee gradients the rule reads (how an update changes the next
      gradients: curvature, the signal of instability), at 1.1-1.4x the cost
      of a segment; False keeps them constants (first-order, as in
      Andrychowicz et al.). A task whose meta-gradient is non-finite (with a
      finite loss) is left out of that meta-step (metrics.jsonl: tasks_used).
    es_sigma: ES perturbation scale.
    es_pairs: ES antithetic pairs per task and meta-step.
    init_scale_range: task augmentation: initial parameters are scaled by a
      log-uniform factor from this range at every trajectory start.
    loss_scale_range: task augmentation: the optimizer sees the gradient of the
      loss times a log-uniform factor from this range (the meta-loss does not).
    checkpoint_every: meta-steps between checkpoints.
    log_every: meta-steps between progress lines and summaries.
    calibrate_step_size: multipliers of the meta-trained step size tried once
      meta-training is done (empty: no calibration). Each one trains every
      task from a fixed initialization, without augmentation, for
      `calibrate_horizon` steps; its score is the mean over tasks of the log
      of the whole-training-set loss at `horizon` and at `calibrate_horizon`,
      or +inf if a run is unstable (NaN/Inf, a loss above its start, or a
      higher loss at `calibrate_horizon` than at `horizon`, beyond
      `calibrate_rise_tolerance`). The exported
      weights take the best multiplier below the first unstable one
      (`trainer.choose_multiplier`). The meta-gradient sees
      `unroll` steps at a time, and a short horizon biases it towards small
      steps (Wu et al. 2018, "short-horizon bias"); this one-dimensional search
      scores whole trajectories. Needs a network with a log_step_size.
    calibrate_horizon: trajectory length of the calibration; 0 means
      max_horizon if it is set, else horizon.
    calibrate_criterion: how the calibration scores a multiplier whose runs
      are all stable. "mean_log_loss": the mean over tasks described above.
      "adam_rank": how many learning rates of Adam's 7-point grid 1e-4..1e-1
      reach a lower loss on the same trajectory (same initialization and
      batches), averaged over tasks and the two horizons: the held-out bar
      ("beaten by at most one grid point") asked of the meta-training tasks.
      A rank, unlike a loss ratio, is not dominated by a task that a large
      step solves to a loss of 1e-7. Unlike the held-out evaluation's count,
      only stable Adam runs count (NaN/Inf or above the start: not counted),
      and Adam runs are not held to the rule's "no higher at the end than
      at `horizon`".
    calibrate_seeds: how many initializations (each with its own batches)
      the calibration trains every task from. A multiplier is unstable if any
      of its runs is; its score averages over all of them. 1 (the default)
      is the single run per task of the configs written before this option.
    calibrate_stability_margin: the chosen multiplier must be at least this
      factor below the smallest unstable one (1: any stable multiplier below
      it). Stability measured on a few trajectories is an estimate; a margin
      keeps the step away from an edge that other models may reach sooner
      (coordinate_v10.md: x0.5 was stable on all 21 calibration runs and
      collapsed on the quality benchmark's CNN).
    calibrate_adam_floor: 0 (the default: off), or a learning rate of the
      Adam grid (with the adam_rank criterion): only a multiplier under which
      every task's loss, averaged over its initializations, is at or below
      Adam's at this rate at both horizons may be chosen. The adam_rank score
      is a mean over tasks, so one task can fall well behind Adam(1e-3)
      while the others outweigh it (coordinate_v2.md, attempt 22: the masked
      LM). No eligible multiplier: CalibrationError, nothing exported.
    calibrate_rise_tolerance: how much higher than at `horizon` a rule's run
      may end at `calibrate_horizon` and still count as stable, as a fraction
      of its loss at `horizon` in [0, 1] (`trainer.rose`): 0 (the default, and every
      config before the option) counts any rise as unstable. A run on a
      plateau ends a hair above where it was (coordinate_v2.md, attempt 28:
      0.043100 against 0.043095, a rise of 0.01%, made a multiplier
      unstable); a blow-up rises by far more (attempt 28 at x8: 12%). NaN/Inf
      and a loss above the start stay unstable whatever the tolerance.
  """
  network: str = "coordinate"
  network_config: dict = dataclasses.field(default_factory=dict)
  init: str = "hand_set"
  init_weights: typing.Any = None
  init_step_size: float = 1e-3
  init_noise: float = 0.0
  seed: int = 0
  tasks: Tuple[str, ...] = tasks_lib.DEFAULT_TASKS
  horizon: int = 200
  unroll: int = 20
  max_horizon: int = 0
  meta_loss_floor: float = 0.0
  meta_steps: int = 1000
  meta_learning_rate: float = 1e-3
  meta_grad_clip: float = 1.0
  meta_grad_task_normalization: bool = False
  estimator: str = "gradient"
  second_order: bool = False
  es_sigma: float = 0.01
  es_pairs: int = 4
  init_scale_range: Tuple[float, float] = (0.5, 2.0)
  loss_scale_range: Tuple[float, float] = (1.0, 1.0)
  checkpoint_every: int = 100
  log_every: int = 20
  calibrate_step_size: Tuple[float, ...] = ()
  calibrate_horizon: int = 0
  calibrate_criterion: str = "mean_log_loss"
  calibrate_seeds: int = 1
  calibrate_stability_margin: float = 1.0
  calibrate_adam_floor: float = 0.0
  calibrate_rise_tolerance: float = 0.0

  def __post_init__(self):
    problems = []

    def need(ok, message):
      if not ok:
        problems.append(message)

    need(self.network in rule.NETWORKS, f"network must be one of {sorted(rule.NETWORKS)}, "
         f"got {self.network!r}")
    need(isinstance(self.network_config, dict), "network_config must be a mapping")
    if self.network in rule.NETWORKS and isinstance(self.network_config, dict):
      try:
        rule.build_network(self.network, self.network_config)
      except (TypeError, ValueError) as e:
        problems.append(f"network_config: {e}")
    need(self.init in INITS, f"init must be one of {INITS}, got {self.init!r}")
    need(not (self.init == "hand_set" and self.network not in HAND_SET_NETWORKS),
         f"init 'hand_set' exists only for networks {HAND_SET_NETWORKS}")
    need((self.init == "weights") == (self.init_weights is not None),
         "init_weights is needed with init 'weights', and only then")
    if self.init == "weights" and self.init_weights is not None and not problems:
      try:
        initial_weights_theta(self)
      except (TypeError, ValueError) as e:
        problems.append(f"init_weights: {e}")
    need(self.estimator in ESTIMATORS, f"estimator must be one of {ESTIMATORS}, "
         f"got {self.estimator!r}")
    need(isinstance(self.second_order, bool), f"second_order must be true or false, "
         f"got {self.second_order!r}")
    need(isinstance(self.meta_grad_task_normalization, bool),
         f"meta_grad_task_normalization must be true or false, "
         f"got {self.meta_grad_task_normalization!r}")
    need(not (self.second_order and self.estimator != "gradient"),
         "second_order needs estimator 'gradient'")
    need(len(self.tasks) > 0, "tasks must name at least one task")
    train_names = {spec.name for spec in tasks_lib.META_TRAIN}
    held_out = {spec.name for spec in tasks_lib.ALL_HELD_OUT}
    for name in self.tasks:
      if name in held_out:
        problems.append(f"task {name!r} is held out: it may never be used in meta-training")
      elif name not in train_names:
        problems.append(f"unknown task {name!r}; meta-training tasks: {sorted(train_names)}")
    need(len(set(self.tasks)) == len(self.tasks), "tasks must not repeat")
    for name in ("horizon", "unroll", "meta_steps", "es_pairs", "checkpoint_every",
                 "log_every"):
      value = getattr(self, name)
      low = 0 if name == "meta_steps" and self.calibrate_step_size else 1
      need(isinstance(value, int) and not isinstance(value, bool) and value >= low,
           f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(self.horizon, int) and isinstance(self.unroll, int) and self.unroll >= 1:
      need(self.horizon % self.unroll == 0,
           f"unroll ({self.unroll}) must divide horizon ({self.horizon})")
    if isinstance(self.horizon, int) and isinstance(self.unroll, int) and self.unroll >= 1:
      need(isinstance(self.max_horizon, int) and not isinstance(self.max_horizon, bool)
           and (self.max_horizon == 0 or (self.max_horizon > self.horizon
                                          and self.max_horizon % self.unroll == 0)),
           f"max_horizon must be 0 or a multiple of unroll ({self.unroll}) above horizon "
           f"({self.horizon}), got {self.max_horizon!r}")
    need(isinstance(self.meta_loss_floor, (int, float))
         and not isinstance(self.meta_loss_floor, bool)
         and math.isfinite(self.meta_loss_floor) and self.meta_loss_floor >= 0,
         f"meta_loss_floor must be a float >= 0, got {self.meta_loss_floor!r}")
    need(isinstance(self.init_noise, (int, float)) and not isinstance(self.init_noise, bool)
         and math.isfinite(self.init_noise) and self.init_noise >= 0,
         f"init_noise must be a float >= 0, got {self.init_noise!r}")
    for name in ("init_step_size", "meta_learning_rate", "meta_grad_clip", "es_sigma"):
      value = getattr(self, name)
      need(isinstance(value, (int, float)) and not isinstance(value, bool)
           and math.isfinite(value) and value > 0, f"{name} must be a float > 0, got {value!r}")
    for name in ("init_scale_range", "loss_scale_range"):
      value = getattr(self, name)
      need(isinstance(value, (tuple, list)) and len(value) == 2
           and all(isinstance(v, (int, float)) and v > 0 for v in value)
           and value[0] <= value[1], f"{name} must be [low, high] with 0 < low <= high, "
           f"got {value!r}")
    self._check_calibration(need)
    if problems:
      raise ValueError("invalid meta-training config:\n  - " + "\n  - ".join(problems))

  def _check_calibration(self, need):
    values = self.calibrate_step_size
    need(isinstance(values, (tuple, list))
         and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                 and math.isfinite(v) and v > 0 for v in values)
         and len(set(values)) == len(values),
         f"calibrate_step_size must be a list of distinct floats > 0, got {values!r}")
    if values and self.network in rule.NETWORKS:
      shapes = rule.build_network(self.network, {}).theta_shapes()
      need(any(name.endswith("log_step_size") for name in shapes),
           f"calibrate_step_size needs a network with a log_step_size; "
           f"{self.network!r} has none")
    horizon = self.calibrate_horizon
    ok = isinstance(horizon, int) and not isinstance(horizon, bool)
    if ok and horizon and isinstance(self.unroll, int) and isinstance(self.horizon, int):
      ok = horizon >= self.horizon and self.unroll >= 1 and horizon % self.unroll == 0
    need(ok and horizon >= 0, f"calibrate_horizon must be 0 or a multiple of unroll "
         f"({self.unroll}) of at least horizon ({self.horizon}), got {horizon!r}")
    need(self.calibrate_criterion == "mean_log_loss" or bool(values),
         "calibrate_criterion needs calibrate_step_size")
    seeds = self.calibrate_seeds
    need(isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1,
         f"calibrate_seeds must be an integer >= 1, got {seeds!r}")
    need(seeds == 1 or bool(values), "calibrate_seeds needs calibrate_step_size")
    margin = self.calibrate_stability_margin
    need(isinstance(margin, (int, float)) and not isinstance(margin, bool)
         and math.isfinite(margin) and margin >= 1,
         f"calibrate_stability_margin must be a float >= 1, got {margin!r}")
    need(margin == 1 or bool(values), "calibrate_stability_margin needs calibrate_step_size")
    floor = self.calibrate_adam_floor
    need(not isinstance(floor, bool) and (floor == 0 or floor in tasks_lib.ADAM_GRID),
         f"calibrate_adam_floor must be 0 or a learning rate of the Adam grid "
         f"{list(tasks_lib.ADAM_GRID)}, got {floor!r}")
    need(floor == 0 or self.calibrate_criterion == "adam_rank",
         "calibrate_adam_floor needs calibrate_criterion: adam_rank")
    rise = self.calibrate_rise_tolerance
    need(isinstance(rise, (int, float)) and not isinstance(rise, bool)
         and math.isfinite(rise) and 0 <= rise <= 1,
         f"calibrate_rise_tolerance must be a float in [0, 1], got {rise!r}")
    need(rise == 0 or bool(values), "calibrate_rise_tolerance needs calibrate_step_size")
    need(self.calibrate_criterion in CALIBRATION_CRITERIA,
         f"calibrate_criterion must be one of {CALIBRATION_CRITERIA}, "
         f"got {self.calibrate_criterion!r}")

  def calibration_horizon(self) -> int:
    """The calibration's trajectory length (see `calibrate_horizon`)."""
    return self.calibrate_horizon or self.max_horizon or self.horizon

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    if out["init_weights"] is None:  # configs without it keep their old form
      del out["init_weights"]
    if not out["calibrate_step_size"] and not out["calibrate_horizon"]:  # likewise
      del out["calibrate_step_size"], out["calibrate_horizon"]
    if not out["second_order"]:  # configs from before the option keep their form
      del out["second_order"]
    if out.get("calibrate_criterion") == "mean_log_loss":  # the criterion before there was a choice
      del out["calibrate_criterion"]
    if out["calibrate_seeds"] == 1:  # one run per task, as before the option
      del out["calibrate_seeds"]
    if out["calibrate_stability_margin"] == 1:  # likewise
      del out["calibrate_stability_margin"]
    if out["calibrate_adam_floor"] == 0:  # likewise
      del out["calibrate_adam_floor"]
    if out["calibrate_rise_tolerance"] == 0:  # likewise
      del out["calibrate_rise_tolerance"]
    for name, value in out.items():
      if isinstance(value, tuple):
        out[name] = list(value)
    return out

  @classmethod
  def from_dict(cls, values: dict) -> "MetaTrainConfig":
    if not isinstance(values, dict):
      raise ValueError(f"a meta-training config must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"invalid meta-training config: unknown fields {unknown}; "
                       f"known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    coerced = {}
    for name, value in values.items():
      if hints[name] in (Tuple[str, ...], Tuple[float, float], Tuple[float, ...]) and (
          isinstance(value, list)):
        value = tuple(value)
      if hints[name] is Tuple[float, ...] and isinstance(value, tuple):
        value = tuple(float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                      for v in value)
      if hints[name] is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
      coerced[name] = value
    return cls(**coerced)

  @classmethod
  def from_yaml(cls, path: str) -> "MetaTrainConfig":
    try:
      with open(path) as f:
        values = yaml.safe_load(f) or {}
    except OSError as e:
      raise ValueError(f"cannot read meta-training config {path!r}: {e}") from e
    except yaml.YAMLError as e:
      raise ValueError(f"meta-training config {path!r} is not valid YAML: {e}") from e
    try:
      return cls.from_dict(values)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{path}: {e}") from e

  def to_yaml(self) -> str:
    return yaml.safe_dump(self.to_dict(), sort_keys=True)


def initial_weights_theta(cfg: MetaTrainConfig) -> dict:
  """theta (name -> array) of `cfg.init_weights` for cfg's network and config.

  Raises ValueError if a file cannot be loaded or is for another network or
  network config (a weights.WeightsError is a ValueError).
  """
  from mnemosyne_tf import weights as weights_lib  # pylint: disable=import-outside-toplevel
  network = rule.build_network(cfg.network, cfg.network_config)

  def load(name, kind, net):
    loaded = weights_lib.load_weights(name)
    if loaded.network != kind:
      raise ValueError(f"weights {name!r} are for network {loaded.network!r}, not {kind!r}")
    # theta must fit; config fields that do not shape theta (e.g. gradient_eps)
    # may differ: meta-training continues under this config.
    net.check_theta(loaded.theta, source=f"weights {name!r}")
    return loaded.theta

  if isinstance(cfg.init_weights, dict):
    if cfg.network != "super" or sorted(cfg.init_weights) != ["coordinate", "tensor"]:
      raise ValueError("a mapping of init_weights is for network 'super' and has exactly "
                       "the keys coordinate and tensor")
    parts = {mode: load(cfg.init_weights[mode], mode, part)
             for mode, part in network.parts.items()}
    return network.combine(parts)
  if not isinstance(cfg.init_weights, str):
    raise ValueError(f"init_weights must be a weights name or path (or, for super, a "
                     f"mapping), got {cfg.init_weights!r}")
  return load(cfg.init_weights, cfg.network, network)
