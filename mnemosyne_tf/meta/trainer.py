"""Meta-training by truncated unrolls (the library behind `meta/train.py`).

Each configured task runs one optimizee trajectory at a time: `horizon` steps of
training from a fresh (augmented) initialization (or a length drawn per
trajectory up to `max_horizon`), cut into segments of `unroll` steps. A meta-step advances every task's trajectory by one segment and updates
theta once, from the average over tasks (with `meta_grad_task_normalization`,
of each divided by its norm) of the meta-gradient of

    meta-loss = mean over the segment's steps of log(max(loss_k, meta_loss_floor))

(the log makes tasks of different loss scales comparable). Gradients of the
optimizee are treated as constants (Andrychowicz et al.'s first-order
approximation: the meta-gradient flows through the parameter updates only)
unless `second_order` is set (then also through the gradients). A
segment, with its inner loop as a `tf.while_loop`, runs inside
`tf.function(jit_compile=True)` (traced with the static matmul gradients of
`static_gradients.py`, without which XLA cannot compile the second-order
meta-gradient of a transformer task); with `estimator: es` the meta-gradient is the
antithetic ES estimate from forward segments only.

Everything lives in variables saved by `tf.train.Checkpoint`: theta, the
meta-optimizer (Adam, written out here so its state is explicit), the meta-step,
the wall time and every trajectory (parameters, optimizer states, position in
its horizon, restart count, augmentation factors). Batches, inits and ES noise
are stateless functions of (seed, meta-step, task), so a killed run resumes
where its last checkpoint was and continues exactly as if never stopped.
"""

import json
import math
import os
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf

from mnemosyne_tf import rule
from mnemosyne_tf import strict_json
from mnemosyne_tf import weights as weights_lib
from mnemosyne_tf.meta import config as config_lib
from mnemosyne_tf.meta import static_gradients
from mnemosyne_tf.meta import tasks as tasks_lib

_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8
_KERAS_ADAM_EPS = 1e-7  # keras.optimizers.Adam's default, as in the held-out evaluation
ADAM_GRID = tasks_lib.ADAM_GRID  # the held-out bar's learning rates


def initial_theta(cfg: config_lib.MetaTrainConfig, network) -> Dict[str, tf.Tensor]:
  """The theta meta-training starts from (see MetaTrainConfig.init, init_noise)."""
  if cfg.init == "hand_set":
    theta = network.hand_set_theta(step_size=cfg.init_step_size)
  elif cfg.init == "weights":
    theta = {name: tf.constant(value, tf.float32)
             for name, value in config_lib.initial_weights_theta(cfg).items()}
  elif cfg.network == "lstm":
    theta = network.init_theta(cfg.seed)
  else:
    theta = network.init_theta(cfg.seed, step_size=cfg.init_step_size)
  if cfg.init_noise > 0:
    for i, name in enumerate(sorted(theta)):
      if name.endswith(("/query", "/key")):
        theta[name] = theta[name] + cfg.init_noise * tf.random.stateless_normal(
            theta[name].shape, [cfg.seed, 1000 + i])
  return theta


class _Trajectory:
  """One task's optimizee trajectory, in variables."""

  def __init__(self, task: tasks_lib.Task, network, horizon: int, varied: bool):
    self.task = task
    self.varied = varied
    params = task.init_params(0)
    self.params = [tf.Variable(p, trainable=False) for p in params]
    self.states = [tf.Variable(network.pack_state(network.init_state(p), p.shape),
                               trainable=False) for p in params]
    self.position = tf.Variable(0, dtype=tf.int64, trainable=False)  # steps done
    self.restarts = tf.Variable(-1, dtype=tf.int64, trainable=False)
    self.loss_scale = tf.Variable(1.0, trainable=False)
    self.length = tf.Variable(horizon, dtype=tf.int64, trainable=False)  # its horizon

  def checkpointables(self):
    saved = {"params": self.params, "states": self.states, "position": self.position,
             "restarts": self.restarts, "loss_scale": self.loss_scale}
    if self.varied:  # runs with a fixed horizon keep the checkpoint layout they had
      saved["length"] = self.length
    return saved


class MetaTrainer:
  """Meta-trains theta for `cfg` in `workdir` (checkpoints, summaries, weights)."""

  def __init__(self, cfg: config_lib.MetaTrainConfig, workdir: str, command: str = ""):
    self.cfg = cfg
    self.workdir = workdir
    self.command = command
    os.makedirs(workdir, exist_ok=True)
    self.network = rule.build_network(cfg.network, cfg.network_config)
    theta = initial_theta(cfg, self.network)
    self.trainable_names = self.network.trainable_names()
    self.fixed = {k: v for k, v in theta.items() if k not in self.trainable_names}
    self.theta = {k: tf.Variable(theta[k], name=k.replace("/", "_"))
                  for k in self.trainable_names}
    self.adam_m = {k: tf.Variable(tf.zeros_like(v)) for k, v in self.theta.items()}
    self.adam_v = {k: tf.Variable(tf.zeros_like(v)) for k, v in self.theta.items()}
    self.meta_step = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.wall_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    self.trajectories = [_Trajectory(tasks_lib.Task(tasks_lib.get_spec(name)), self.network,
                                     cfg.horizon, varied=cfg.max_horizon > 0)
                         for name in cfg.tasks]
    self._segments = {}
    self.checkpoint = tf.train.Checkpoint(
        theta=self.theta, adam_m=self.adam_m, adam_v=self.adam_v,
        meta_step=self.meta_step, wall_seconds=self.wall_seconds,
        trajectories=[t.checkpointables() for t in self.trajectories])
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, os.path.join(workdir, "checkpoints"), max_to_keep=2)
    self.metrics_path = os.path.join(workdir, "metrics.jsonl")
    self.writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  # ----------------------------------------------------------------- resume
  def restore(self) -> int:
    """Restores the latest checkpoint, if any; returns the meta-step reached."""
    latest = self.manager.latest_checkpoint
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
    step = int(self.meta_step.numpy())
    self._truncate_metrics(step)
    return step

  def _truncate_metrics(self, step: int):
    """Drops metric lines past the restored step (they will be redone)."""
    if not os.path.exists(self.metrics_path):
      return
    with open(self.metrics_path) as f:
      kept = [line for line in f if json.loads(line)["step"] <= step]
    with open(self.metrics_path, "w") as f:
      f.writelines(kept)

  # ----------------------------------------------------------------- segments
  def _segment_fn(self, task_index: int):
    """The compiled segment of one task: (theta, params, states, ...) ->
    (meta-loss, gradient or None, new params, new states)."""
    if task_index in self._segments:
      return self._segments[task_index]
    task = self.trajectories[task_index].task
    network, fixed, unroll = self.network, self.fixed, self.cfg.unroll
    floor = self.cfg.meta_loss_floor
    second_order = self.cfg.second_order

    def log_loss(loss):
      return tf.math.log(tf.maximum(loss, floor) if floor > 0 else loss)
    shapes = [p.shape for p in self.trajectories[task_index].params]

    def run(theta_trainable, params, packed, position, seed, loss_scale):
      theta = dict(fixed, **theta_trainable)
      xs, ys = task.batches(seed, unroll + 1)
      current = list(params)
      states = [network.unpack_state(s, shape) for s, shape in zip(packed, shapes)]
      total = tf.constant(0.0)
      for k in tf.range(unroll):
        with tf.GradientTape() as inner:
          inner.watch(current)
          loss = task.loss(current, tf.gather(xs, k), tf.gather(ys, k))
          scaled = loss * loss_scale  # augmentation: what the optimizer sees
        grads = _dense(inner.gradient(scaled, current))
        total += log_loss(loss)
        step = tf.cast(position + tf.cast(k, tf.int64) + 1, tf.float32)
        multiplier = network.step_multiplier(step, shapes)  # 1.0 for most rules
        new_params, new_states = [], []
        for p, g, s in zip(current, grads, states):
          # Second order: the meta-gradient also flows through g. Where v =
          # EMA(g^2) is 0 (g exactly 0, e.g. an always-blank pixel's weights,
          # or so small that g^2 underflows) the network's square roots have a
          # zero gradient (features.sqrt_zero_safe), not 0 * inf.
          if not second_order:
            g = tf.stop_gradient(g)
          update, s = network.apply(theta, s, g, p, step, multiplier)
          new_params.append(p + update)
          new_states.append(s)
        current, states = new_params, new_states
      total += log_loss(task.loss(current, xs[unroll], ys[unroll]))
      meta_loss = total / float(unroll + 1)
      packed = [network.pack_state(s, shape) for s, shape in zip(states, shapes)]
      return meta_loss, current, packed

    @tf.function(jit_compile=True)
    def compiled_with_gradient(theta_trainable, params, packed, position, seed, loss_scale):
      with tf.GradientTape() as tape:
        tape.watch(theta_trainable)
        meta_loss, params, packed = run(theta_trainable, params, packed, position, seed,
                                        loss_scale)
      # Zeros for theta a task does not use (a Super-Mnemosyne part no tensor of
      # the task is routed to).
      grad = tape.gradient(meta_loss, theta_trainable,
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
      return meta_loss, grad, params, packed

    def with_gradient(*args):
      # Traced (on its first call) with static broadcast reductions, which XLA
      # needs for the second-order gradient of transformer tasks.
      with static_gradients.static_batch_matmul_gradients():
        return compiled_with_gradient(*args)

    @tf.function(jit_compile=True)
    def forward(theta_trainable, params, packed, position, seed, loss_scale):
      return run(theta_trainable, params, packed, position, seed, loss_scale)

    self._segments[task_index] = (with_gradient, forward)
    return self._segments[task_index]

  def _restart(self, index: int, traj: _Trajectory):
    """New initialization and augmentation for trajectory `index`."""
    restarts = int(traj.restarts.numpy()) + 1
    rng = np.random.RandomState([self.cfg.seed, index, restarts])
    low, high = self.cfg.init_scale_range
    init_scale = math.exp(rng.uniform(math.log(low), math.log(high)))
    low, high = self.cfg.loss_scale_range
    traj.loss_scale.assign(math.exp(rng.uniform(math.log(low), math.log(high))))
    if self.cfg.max_horizon:
      unroll = self.cfg.unroll
      segments = math.exp(rng.uniform(math.log(self.cfg.horizon // unroll),
                                      math.log(self.cfg.max_horizon // unroll)))
      traj.length.assign(unroll * int(round(segments)))
    init = traj.task.init_params(seed=1000 * self.cfg.seed + 7919 * index + restarts,
                                 init_scale=init_scale)
    for var, value in zip(traj.params, init):
      var.assign(value)
    for var, p in zip(traj.states, init):
      var.assign(self.network.pack_state(self.network.init_state(p), p.shape))
    traj.position.assign(0)
    traj.restarts.assign(restarts)

  def _es_gradient(self, forward, traj, step, index, seed):
    """Antithetic ES estimate of the segment's meta-gradient."""
    sigma, pairs = self.cfg.es_sigma, self.cfg.es_pairs
    theta = {k: v.value() for k, v in self.theta.items()}
    grad = {k: tf.zeros_like(v) for k, v in theta.items()}
    args = ([p.value() for p in traj.params], [s.value() for s in traj.states],
            traj.position.value(), seed, traj.loss_scale.value())
    for pair in range(pairs):
      noise = {k: sigma * tf.random.stateless_normal(
          v.shape, [self.cfg.seed * 7 + pair, step * 1009 + index * 31 + i])
               for i, (k, v) in enumerate(sorted(theta.items()))}
      plus = forward({k: theta[k] + noise[k] for k in theta}, *args)[0]
      minus = forward({k: theta[k] - noise[k] for k in theta}, *args)[0]
      scale = (plus - minus) / (2.0 * sigma ** 2 * pairs)
      if not bool(tf.math.is_finite(scale)):
        continue
      grad = {k: grad[k] + scale * noise[k] for k in grad}
    return grad

  # ----------------------------------------------------------------- training
  def train(self, log=print) -> dict:
    """Runs (or resumes) meta-training to `meta_steps`; exports the weights."""
    cfg = self.cfg
    start_step = self.restore()
    if start_step:
      log(f"resumed from {self.manager.latest_checkpoint} at meta-step {start_step}")
    started, start_wall = time.time(), float(self.wall_seconds.numpy())
    failed_since = None  # first meta-step of the current run of steps with no gradient
    for step in range(start_step, cfg.meta_steps):
      losses, grads, norms = [], [], []
      for index, traj in enumerate(self.trajectories):
        done = int(traj.position.numpy()) >= int(traj.length.numpy())
        if int(traj.restarts.numpy()) < 0 or done:
          self._restart(index, traj)
        with_gradient, forward = self._segment_fn(index)
        seed = tf.constant([cfg.seed, step * 131 + index], tf.int32)
        args = ({k: v.value() for k, v in self.theta.items()},
                [p.value() for p in traj.params], [s.value() for s in traj.states],
                traj.position.value(), seed, traj.loss_scale.value())
        if cfg.estimator == "gradient":
          meta_loss, grad, params, packed = with_gradient(*args)
        else:
          grad = self._es_gradient(forward, traj, step, index, seed)
          meta_loss, params, packed = forward(*args)
        finite = bool(tf.math.is_finite(meta_loss)) and all(
            bool(tf.reduce_all(tf.math.is_finite(p))) for p in params)
        if not finite:  # a diverged optimizee: restart it, learn nothing from it
          self._restart(index, traj)
          losses.append(float("nan"))
          norms.append(float("nan"))
          continue
        for var, value in zip(traj.params, params):
          var.assign(value)
        for var, value in zip(traj.states, packed):
          var.assign(value)
        traj.position.assign_add(cfg.unroll)
        losses.append(float(meta_loss))
        norm = float(tf.linalg.global_norm([grad[k] for k in sorted(grad)]))
        norms.append(norm)
        if all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grad.values()):
          if cfg.meta_grad_task_normalization and 0 < norm < math.inf:
            grad = {k: g / norm for k, g in grad.items()}
          elif cfg.meta_grad_task_normalization and norm == math.inf:  # overflowed
            keys = sorted(grad)
            grad = dict(zip(keys, clip_by_global_norm([grad[k] for k in keys], 1.0)[0]))
          grads.append(grad)
      grad_norm = self._apply_meta_gradient(grads)
      used = len(grads) if math.isfinite(grad_norm) else 0  # 0: theta did not change
      self.meta_step.assign(step + 1)
      self.wall_seconds.assign(start_wall + time.time() - started)
      self._record(step + 1, losses, grad_norm, used, log, norms)
      failed_since = None if used else (step + 1 if failed_since is None else failed_since)
      if failed_since is not None and step + 2 - failed_since >= MAX_STEPS_WITHOUT_GRADIENT:
        raise MetaTrainingError(
            f"meta-training diverged: no task gave a finite meta-gradient in "
            f"{MAX_STEPS_WITHOUT_GRADIENT} meta-steps in a row (meta-steps {failed_since}-"
            f"{step + 1}): theta has not changed since meta-step {failed_since - 1} and is "
            f"unlikely to recover; not exporting. "
            f"Losses per task: {self.metrics_path}. Start again in a new workdir with a "
            "lower meta_learning_rate or meta_grad_clip.")
      if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.meta_steps:
        self.manager.save(checkpoint_number=step + 1)
    return self.export(calibration=self.calibrate(log))

  def _apply_meta_gradient(self, grads: List[dict]) -> float:
    """One Adam step on theta from the mean of `grads`: its clipped global norm,
    or NaN if there was no step (no gradient, or finite task gradients whose
    sum overflows float32)."""
    if not grads:
      return float("nan")
    mean = {k: tf.add_n([g[k] for g in grads]) / len(grads) for k in self.theta}
    if not all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in mean.values()):
      return float("nan")
    clipped, norm = clip_by_global_norm([mean[k] for k in sorted(mean)],
                                        self.cfg.meta_grad_clip)
    t = tf.cast(self.meta_step + 1, tf.float32)
    lr = self.cfg.meta_learning_rate * tf.sqrt(1 - _ADAM_B2 ** t) / (1 - _ADAM_B1 ** t)
    for k, g in zip(sorted(mean), clipped):
      self.adam_m[k].assign(_ADAM_B1 * self.adam_m[k] + (1 - _ADAM_B1) * g)
      self.adam_v[k].assign(_ADAM_B2 * self.adam_v[k] + (1 - _ADAM_B2) * g * g)
      self.theta[k].assign_sub(lr * self.adam_m[k] / (tf.sqrt(self.adam_v[k]) + _ADAM_EPS))
    return float(norm)

  def _record(self, step, losses, grad_norm, used, log, norms):
    cfg = self.cfg
    finite = [l for l in losses if math.isfinite(l)]
    mean = sum(finite) / len(finite) if finite else float("nan")
    record = {"step": step, "meta_loss": mean, "grad_norm": grad_norm,
              "tasks_used": used, "wall_seconds": float(self.wall_seconds.numpy()),
              "per_task": dict(zip(cfg.tasks, losses)),
              "per_task_grad_norm": dict(zip(cfg.tasks, norms))}
    with open(self.metrics_path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if step % cfg.log_every == 0 or step == cfg.meta_steps:
      with self.writer.as_default(step=step):
        tf.summary.scalar("meta_loss", mean)
        tf.summary.scalar("meta_grad_norm", grad_norm)
        for name, value in record["per_task"].items():
          tf.summary.scalar(f"meta_loss/{name}", value)
        for name, value in record["per_task_grad_norm"].items():
          tf.summary.scalar(f"meta_grad_norm/{name}", value)
      rate = step / max(record["wall_seconds"], 1e-9)
      eta = (cfg.meta_steps - step) / max(rate, 1e-9)
      log(f"meta-step {step}/{cfg.meta_steps}  meta-loss {mean:.4f}  |grad| "
          f"{grad_norm:.3g}  {rate:.2f} steps/s  elapsed {record['wall_seconds'] / 60:.1f} min"
          f"  ETA {eta / 60:.1f} min")

  # ----------------------------------------------------------------- calibration
  def calibrate(self, log=print):
    """The step-size calibration of `cfg.calibrate_step_size` for the current
    theta: {"multipliers", "scores", "per_task", "chosen", "seconds", ...}, or
    None without one. Each multiplier's score is saved to calibration.json as
    soon as it is known, so a run killed here resumes with the next one."""
    cfg = self.cfg
    if not cfg.calibrate_step_size:
      return None
    path = os.path.join(self.workdir, "calibration.json")
    theta = self.theta_values()
    identity = {"criterion": 2, "theta_sha256": _theta_digest(theta), "seed": cfg.seed,
                "horizon": cfg.horizon, "calibrate_horizon": cfg.calibration_horizon(),
                "tasks": list(cfg.tasks), "unroll": cfg.unroll,
                "network_config": self.network.config.to_dict(),
                "meta_loss_floor": cfg.meta_loss_floor}
    if cfg.calibrate_seeds > 1:  # identities saved before the option stay valid
      identity["calibrate_seeds"] = cfg.calibrate_seeds
    if cfg.calibrate_rise_tolerance:  # the verdicts depend on it; likewise
      identity["calibrate_rise_tolerance"] = cfg.calibrate_rise_tolerance
    done = {}
    if os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if saved.get("identity") == identity:
        done = {float(m): _from_strict(r) for m, r in saved["runs"]}
    seconds = sum(r["seconds"] for r in done.values())
    log(f"step-size calibration: {len(cfg.calibrate_step_size)} multipliers x "
        f"{len(cfg.tasks)} tasks"
        + (f" x {cfg.calibrate_seeds} initializations" if cfg.calibrate_seeds > 1 else "")
        + f" x {cfg.calibration_horizon()} steps"
        + (f" ({len(done)} already done)" if done else ""))
    for multiplier in cfg.calibrate_step_size:
      if multiplier in done:
        continue
      run_start = time.time()
      shifted = {k: tf.constant(v + math.log(multiplier) if k.endswith("log_step_size") else v)
                 for k, v in theta.items() if k in self.theta}
      per_task = {key: self._calibration_run(index, self.trajectories[index].task, shifted,
                                             replica)
                  for key, index, replica in self._calibration_cases()}
      score = float(np.mean([r["score"] for r in per_task.values()]))
      done[multiplier] = {"score": score, "per_task": per_task,
                          "seconds": time.time() - run_start}
      with open(path + ".tmp", "w") as f:
        json.dump(strict_json.strict({"identity": identity, "runs": sorted(done.items())}), f,
                  allow_nan=False)
      os.replace(path + ".tmp", path)
      seconds += time.time() - run_start
      log(f"  x{multiplier:g}: score {score:.4f}  elapsed {seconds / 60:.1f} min")
    mean_scores = {m: done[m]["score"] for m in cfg.calibrate_step_size}
    result = {"multipliers": list(cfg.calibrate_step_size), "criterion": cfg.calibrate_criterion}
    # Both criteria score +inf exactly where a run is unstable: fail before the
    # Adam reference if no multiplier can be chosen.
    margin = cfg.calibrate_stability_margin
    if choose_multiplier(mean_scores, margin) is None:
      raise CalibrationError(
          "step-size calibration: no multiplier is stable" +
          (f" and {margin:g}x below the first unstable one" if margin > 1 else "") +
          f" on every task ({path}); not exporting")
    if cfg.calibrate_criterion == "adam_rank":
      reference = self._adam_reference(log)
      scores = {m: adam_rank(done[m]["per_task"], reference) for m in cfg.calibrate_step_size}
      for m in cfg.calibrate_step_size:
        log(f"  x{m:g}: Adam grid points better, mean over tasks and horizons {scores[m]:.3f}")
      result.update(mean_log_scores=mean_scores, adam_reference=reference)
    else:
      scores = mean_scores
    allowed = None
    if cfg.calibrate_adam_floor:
      behind = {m: behind_adam(done[m]["per_task"], reference, cfg.calibrate_adam_floor)
                for m in cfg.calibrate_step_size}
      for m in cfg.calibrate_step_size:
        log(f"  x{m:g}: behind Adam({cfg.calibrate_adam_floor:g}): "
            + (", ".join(behind[m]) if behind[m] else "no task"))
      allowed = {m for m in cfg.calibrate_step_size if not behind[m]}
      result.update(behind_adam_floor=behind)
    chosen = choose_multiplier(scores, margin, allowed)
    if chosen is None:
      raise CalibrationError(
          f"step-size calibration: no stable multiplier keeps every task at or below "
          f"Adam({cfg.calibrate_adam_floor:g}) ({path}); not exporting")
    log(f"  chosen: x{chosen:g} (score {scores[chosen]:.4f})")
    result.update(scores=scores, chosen=chosen,
                  per_task={m: done[m]["per_task"] for m in cfg.calibrate_step_size},
                  calibrate_horizon=cfg.calibration_horizon(), seconds=round(seconds, 1))
    return result

  def _adam_reference(self, log=print) -> dict:
    """Adam at every learning rate of ADAM_GRID on the calibration's
    trajectories (the same initialization and batches as `_calibration_run`):
    {key: {f"{lr:g}": {str(horizon): loss, "stable": bool}}}, keyed like the
    rule's runs (`_calibration_cases`). Saved to calibration_adam.json run by
    run; a rerun reuses it."""
    cfg = self.cfg
    path = os.path.join(self.workdir, "calibration_adam.json")
    identity = {"seed": cfg.seed, "tasks": list(cfg.tasks), "horizon": cfg.horizon,
                "unroll": cfg.unroll,
                "calibrate_horizon": cfg.calibration_horizon(), "grid": list(ADAM_GRID),
                "adam": {"beta_1": _ADAM_B1, "beta_2": _ADAM_B2, "epsilon": _KERAS_ADAM_EPS}}
    if cfg.calibrate_seeds > 1:  # identities saved before the option stay valid
      identity["calibrate_seeds"] = cfg.calibrate_seeds
    losses = {}
    if os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if saved.get("identity") == identity:
        losses = saved["losses"]
    cases = self._calibration_cases()
    missing = [key for key, _, _ in cases if key not in losses]
    if missing:
      log(f"Adam reference: {len(ADAM_GRID)} learning rates x {len(missing)} runs x "
          f"{cfg.calibration_horizon()} steps")
    for key, index, replica in cases:
      if key in losses:
        continue
      started = time.time()
      losses[key] = {f"{lr:g}": self._adam_run(index, self.trajectories[index].task, lr,
                                               replica)
                     for lr in ADAM_GRID}
      with open(path + ".tmp", "w") as f:
        json.dump(strict_json.strict({"identity": identity, "losses": losses}), f,
                  allow_nan=False)
      os.replace(path + ".tmp", path)
      log(f"  {key}: {time.time() - started:.0f} s")
    return {key: losses[key] for key, _, _ in cases}

  def _adam_segment_fn(self, task_index: int):
    """The compiled Adam segment of one task (Keras's Adam update)."""
    key = ("adam", task_index)
    if key in self._segments:
      return self._segments[key]
    task, unroll = self.trajectories[task_index].task, self.cfg.unroll

    @tf.function(jit_compile=True)
    def segment(params, m, v, position, seed, lr):
      xs, ys = task.batches(seed, unroll + 1)
      current, ms, vs = list(params), list(m), list(v)
      for k in tf.range(unroll):
        with tf.GradientTape() as tape:
          tape.watch(current)
          loss = task.loss(current, tf.gather(xs, k), tf.gather(ys, k))
        grads = _dense(tape.gradient(loss, current))
        t = tf.cast(position + tf.cast(k, tf.int64) + 1, tf.float32)
        alpha = lr * tf.sqrt(1.0 - _ADAM_B2 ** t) / (1.0 - _ADAM_B1 ** t)
        ms = [_ADAM_B1 * a + (1.0 - _ADAM_B1) * g for a, g in zip(ms, grads)]
        vs = [_ADAM_B2 * b + (1.0 - _ADAM_B2) * g * g for b, g in zip(vs, grads)]
        current = [p - alpha * a / (tf.sqrt(b) + _KERAS_ADAM_EPS)
                   for p, a, b in zip(current, ms, vs)]
      return current, ms, vs

    self._segments[key] = segment
    return segment

  def _adam_run(self, index: int, task: tasks_lib.Task, lr: float, replica: int = 0) -> dict:
    """Adam at `lr` on calibration trajectory (`index`, `replica`):
    {str(horizon): loss or None, "stable": bool} (unstable: NaN/Inf or a loss
    above the start)."""
    cfg = self.cfg
    segment = self._adam_segment_fn(index)
    params = task.init_params(seed=self._calibration_init_seed(index, replica))
    m = [tf.zeros_like(p) for p in params]
    v = [tf.zeros_like(p) for p in params]
    start = float(task.loss(params, task.x, task.y))
    out = {str(cfg.horizon): None, str(cfg.calibration_horizon()): None, "stable": True}
    for segment_index in range(cfg.calibration_horizon() // cfg.unroll):
      seed = self._calibration_batch_seed(segment_index, index, replica)
      params, m, v = segment(params, m, v, tf.constant(segment_index * cfg.unroll, tf.int64),
                             seed, tf.constant(lr, tf.float32))
      position = str((segment_index + 1) * cfg.unroll)
      if position in out:
        loss = float(task.loss(params, task.x, task.y))
        if not math.isfinite(loss) or loss > start:
          out["stable"] = False
          return out
        out[position] = loss
    return out

  def _calibration_cases(self):
    """The calibration's runs as (key, task index, replica): every task from
    each of `calibrate_seeds` initializations. Replica 0's key is the task's
    name (the single run of configs without the option), replica r's
    "<name>/seed<r>"."""
    return [(name if replica == 0 else f"{name}/seed{replica}", index, replica)
            for index, name in enumerate(self.cfg.tasks)
            for replica in range(self.cfg.calibrate_seeds)]

  def _calibration_init_seed(self, index: int, replica: int = 0) -> int:
    """Initialization seed of calibration trajectory (`index`, `replica`) (the
    rule's runs and the Adam reference's share it; distinct within a run for
    fewer than 100 tasks; replica 0's is the seed of configs without
    calibrate_seeds)."""
    return 10 ** 6 + 1000 * self.cfg.seed + index + 100 * replica

  def _calibration_batch_seed(self, segment: int, index: int, replica: int = 0) -> tf.Tensor:
    """Batch seed of one segment of calibration trajectory (`index`, `replica`)."""
    return tf.constant([self.cfg.seed + 104729 + 7919 * replica, segment * 131 + index],
                       tf.int32)

  def _calibration_run(self, index: int, task: tasks_lib.Task, theta,
                       replica: int = 0) -> dict:
    """One calibration trajectory: task `index` from a fixed initialization
    (seed-derived, replica `replica`, no augmentation) for
    calibration_horizon() steps."""
    cfg = self.cfg
    _, forward = self._segment_fn(index)
    params = task.init_params(seed=self._calibration_init_seed(index, replica))
    packed = [self.network.pack_state(self.network.init_state(p), p.shape) for p in params]
    start = float(task.loss(params, task.x, task.y))
    at = {cfg.horizon: None, cfg.calibration_horizon(): None}
    one = tf.constant(1.0)
    for segment in range(cfg.calibration_horizon() // cfg.unroll):
      seed = self._calibration_batch_seed(segment, index, replica)
      _, params, packed = forward(theta, params, packed,
                                  tf.constant(segment * cfg.unroll, tf.int64), seed, one)
      position = (segment + 1) * cfg.unroll
      if position in at:
        at[position] = float(task.loss(params, task.x, task.y))
        if not math.isfinite(at[position]) or at[position] > start:
          return {"score": math.inf, "start": start, "loss": at, "diverged": True}
    if rose(at[cfg.horizon], at[cfg.calibration_horizon()], cfg.calibrate_rise_tolerance):
      return {"score": math.inf, "start": start, "loss": at, "diverged": True}
    floor = cfg.meta_loss_floor or 1e-30
    score = float(np.mean([math.log(max(loss, floor)) for loss in at.values()]))
    return {"score": score, "start": start, "loss": at, "diverged": False}

  # ----------------------------------------------------------------- export
  def theta_values(self) -> Dict[str, np.ndarray]:
    values = {k: v.numpy() for k, v in self.fixed.items()}
    values.update({k: v.numpy() for k, v in self.theta.items()})
    return values

  def export(self, path: str = None, calibration: dict = None) -> dict:
    """Writes the parameter-only weights file (with the calibrated step size,
    if `calibration`); returns its summary."""
    path = path or os.path.join(self.workdir, "weights.npz")
    provenance = {
        "kind": "meta_trained",
        "description": f"meta-trained {self.cfg.network} network, {int(self.meta_step.numpy())} "
                       f"meta-steps on {list(self.cfg.tasks)}",
        "command": self.command,
        "meta_config": self.cfg.to_dict(),
        "meta_steps_done": int(self.meta_step.numpy()),
        "wall_seconds": round(float(self.wall_seconds.numpy()), 1),
    }
    theta = self.theta_values()
    if calibration:
      shift = math.log(calibration["chosen"])
      theta = {k: (v + np.float32(shift)).astype(np.float32) if k.endswith("log_step_size")
               else v for k, v in theta.items()}
      provenance["step_size_calibration"] = strict_json.strict(calibration)
    digest = weights_lib.save(path, self.cfg.network, self.network.config.to_dict(),
                              theta, provenance)
    return {"path": path, "sha256": digest, **provenance}


# A run of this many meta-steps in a row with no finite task meta-gradient
# (no change to theta) ends meta-training with MetaTrainingError. The count
# starts again when a run resumes. Theta only changes through those
# gradients, so once every task diverges under it, all later steps do too.
# A second-order LSTM run at a meta learning rate of 1e-3 got there (its theta
# turned NaN through tf's clip, see clip_by_global_norm); it would have run
# on for 140 meta-steps and exported it (benchmarks/results/lstm_v2/README.md).
MAX_STEPS_WITHOUT_GRADIENT = 10


class MetaTrainingError(RuntimeError):
  """Meta-training has diverged: nothing is exported (the checkpoints and
  metrics.jsonl stay)."""


def rose(loss_at_horizon: float, loss_at_end: float, tolerance: float = 0.0) -> bool:
  """Whether a calibration run got worse after the longer run: it ends above
  (1 + tolerance) times its loss at the meta-training horizon (the
  calibration's stability test besides NaN/Inf and a loss above the start;
  `calibrate_rise_tolerance`). Losses are >= 0, so the tolerance is a
  fraction of the earlier loss."""
  return loss_at_end > loss_at_horizon * (1.0 + tolerance)


class CalibrationError(RuntimeError):
  """No multiplier of the calibration is stable: nothing is exported (the
  checkpoint and calibration.json stay, with every run's losses)."""


def choose_multiplier(scores: Dict[float, float], margin: float = 1.0, allowed=None):
  """The calibration's choice: the best-scoring multiplier among those below
  the first unstable one (score +inf) by at least a factor `margin` (1: any
  below it; with no unstable multiplier the margin has nothing to apply to),
  and in `allowed` if given, or None if there is none.
  Past an unstable step size a learned rule is at the edge of stability: a
  larger multiplier that happens to score well there does not transfer (one
  chosen that way diverged on a held-out task; coordinate_v2.md, attempt 6).
  Ties go to the multiplier closest to 1."""
  eligible = []
  for multiplier in sorted(scores):
    if not math.isfinite(scores[multiplier]):
      eligible = [m for m in eligible if m * margin <= multiplier]
      break
    eligible.append(multiplier)
  if allowed is not None:
    eligible = [m for m in eligible if m in allowed]
  if not eligible:
    return None
  return min(eligible, key=lambda m: (scores[m], abs(math.log(m))))


def behind_adam(per_task: dict, adam: dict, learning_rate: float) -> List[str]:
  """The "task@horizon" cases in which the multiplier's loss, averaged over a
  task's initializations, is above Adam's at `learning_rate` averaged over the
  same runs (`calibrate_adam_floor`); keys as in `adam_rank`, a task's
  initializations being "<task>" and "<task>/seed<k>". A diverged rule run
  (which adam_rank already scores +inf) counts as behind; an unstable Adam
  run leaves the task's floor at +inf, whatever its other seeds reached."""
  rule, reference = {}, {}
  for name, run in per_task.items():
    task = name.split("/")[0]
    for horizon, loss in run["loss"].items():
      # A diverged rule run (loss None, NaN or inf) is behind; an unstable
      # Adam run (adam_rank ignores it) is a floor any rule meets.
      rule.setdefault((task, str(horizon)), []).append(
          loss if loss is not None and math.isfinite(loss) else math.inf)
      ref = adam[name][f"{learning_rate:g}"]
      value = ref[str(horizon)]
      reference.setdefault((task, str(horizon)), []).append(
          value if ref.get("stable", True) and value is not None else math.inf)
  return [f"{task}@{horizon}" for (task, horizon), losses in rule.items()
          if not np.mean(losses) <= np.mean(reference[(task, horizon)])]


def clip_by_global_norm(tensors: List[tf.Tensor], clip: float):
  """(tensors scaled to a global norm of at most `clip`, their global norm as
  a Python float): tf.clip_by_global_norm's result, bit for bit, whenever its
  norm is finite. When the sum of squares of finite float32 entries overflows,
  tf's returns NaN (a meta-step then wrote NaN into theta:
  benchmarks/results/lstm_v2/README.md); this computes the norm and the
  scaling in float64 instead, where it cannot overflow. ValueError for
  non-finite entries."""
  clipped, norm = tf.clip_by_global_norm(tensors, clip)
  if math.isfinite(float(norm)):
    return clipped, float(norm)
  if not all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in tensors):
    raise ValueError("clip_by_global_norm: the tensors have non-finite entries")
  wide = [tf.cast(t, tf.float64) for t in tensors]
  norm = float(tf.linalg.global_norm(wide))
  return [tf.cast(w * (clip / norm), t.dtype) for w, t in zip(wide, tensors)], norm


def adam_rank(per_task: dict, adam: dict) -> float:
  """The "adam_rank" calibration score of one multiplier: the number of stable
  Adam grid runs with a lower loss than the multiplier's run, averaged over
  tasks and horizons (0: better than every learning rate of the grid; the
  held-out bar asks for at most 1); +inf if any of its runs is unstable.
  `per_task` maps a calibration run's key (`_calibration_cases`) to the run
  ({"diverged", "loss": {horizon: loss}}), `adam` to `_adam_reference`'s runs
  on the same trajectory."""
  counts = []
  for name, run in per_task.items():
    if run["diverged"]:
      return math.inf
    for horizon, loss in run["loss"].items():
      counts.append(sum(1 for ref in adam[name].values()
                        if ref["stable"] and ref[str(horizon)] < loss))
  return float(np.mean(counts))


def _dense(grads):
  """Gradients as dense tensors: an embedding's comes as IndexedSlices, which
  the rule and the Adam reference both treat as the dense gradient."""
  return [tf.convert_to_tensor(g) for g in grads]


def _theta_digest(theta: Dict[str, np.ndarray]) -> str:
  import hashlib
  digest = hashlib.sha256()
  for name in sorted(theta):
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(theta[name], np.float32).tobytes())
  return digest.hexdigest()


def _from_strict(run: dict) -> dict:
  """One saved calibration run as it was made (strict JSON's None score -> inf)."""
  run = dict(run)
  if run["score"] is None:
    run["score"] = math.inf
  run["per_task"] = {name: dict(r, loss={int(h): loss for h, loss in r["loss"].items()})
                     for name, r in run["per_task"].items()}
  return run
