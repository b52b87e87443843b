"""The meta-trainer: it learns, exports loadable weights, and resumes exactly."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import mnemosyne_tf
from mnemosyne_tf.meta import config as config_lib
from mnemosyne_tf.meta import curves
from mnemosyne_tf.meta import trainer as trainer_lib

_TINY = {"network": "coordinate", "init": "hand_set", "seed": 3,
         "tasks": ["wine_mlp_32_relu"], "horizon": 4, "unroll": 2, "meta_steps": 4,
         "checkpoint_every": 2, "log_every": 2, "meta_learning_rate": 0.01,
         "loss_scale_range": [0.5, 2.0]}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**overrides):
  return config_lib.MetaTrainConfig.from_dict(dict(_TINY, **overrides))


def replay_calibration_run(meta, index, optimizer, replica=0):
  """Calibration trajectory `index` of a trainer with horizon 4, unroll 2 and
  calibration horizon 8, replayed eagerly with a Keras `optimizer` from the
  same initialization (of initialization `replica`) on the same batches:
  {4: loss, 8: loss} on the whole training set."""
  task = meta.trajectories[index].task
  variables = [tf.Variable(p)
               for p in task.init_params(meta._calibration_init_seed(index, replica))]
  losses = {}
  for t in range(1, 9):
    if t % 2 == 1:
      xs, ys = task.batches(meta._calibration_batch_seed(t // 2, index, replica), 3)
    with tf.GradientTape() as tape:
      loss = task.loss(variables, xs[(t - 1) % 2], ys[(t - 1) % 2])
    optimizer.apply([tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)],
                    variables)
    if t in (4, 8):
      losses[t] = float(task.loss(variables, task.x, task.y))
  return losses


class MetaTrainerTest(tf.test.TestCase, parameterized.TestCase):

  def test_training_changes_theta_and_exports_loadable_weights(self):
    workdir = self.create_tempdir().full_path
    meta = trainer_lib.MetaTrainer(tiny(), workdir, command="test")
    before = {k: v.numpy() for k, v in meta.theta.items()}
    summary = meta.train(log=lambda line: None)
    self.assertNotAllClose(before["log_step_size"], meta.theta["log_step_size"])
    opt = mnemosyne_tf.Mnemosyne(weights=summary["path"])
    self.assertEqual(opt.provenance["kind"], "meta_trained")
    self.assertEqual(opt.provenance["meta_steps_done"], 4)
    self.assertEqual(opt.provenance["meta_config"], tiny().to_dict())
    with open(meta.metrics_path) as f:
      records = [json.loads(line) for line in f]
    self.assertEqual([r["step"] for r in records], [1, 2, 3, 4])
    self.assertTrue(all(np.isfinite(r["meta_loss"]) for r in records))
    png = curves.plot_metrics(meta.metrics_path, os.path.join(workdir, "curve.png"))
    with open(png, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    # The projection is fixed, never trained.
    self.assertAllEqual(opt._rule.theta["cam0/projection"],
                        meta.network.projections()["cam0/projection"])

  def test_super_mnemosyne_trains_both_parts_from_shipped_weights(self):
    """With threshold 1,000, wine_mlp_32_relu's tensors (416, 32, 96 and 3
    coordinates) are all tensor-wise, so its segments give the coordinate part
    a zero meta-gradient (not a crash); digits_mlp_32_relu's 64x32 kernel is
    coordinate-wise, so both parts learn."""
    from mnemosyne_tf import weights as weights_lib
    cfg = tiny(network="super", init="weights", meta_steps=2,
               tasks=["wine_mlp_32_relu", "digits_mlp_32_relu"],
               network_config={"threshold": 1000},
               init_weights={"coordinate": "coordinate_v2", "tensor": "tensor_v1"})
    meta = trainer_lib.MetaTrainer(cfg, self.create_tempdir().full_path)
    start = {part: weights_lib.load_weights(f"{part}_v{2 if part == 'coordinate' else 1}")
             .theta["log_step_size"] for part in ("coordinate", "tensor")}
    for part, value in start.items():
      self.assertAllClose(meta.theta[f"{part}/log_step_size"], value)
    summary = meta.train(log=lambda line: None)
    for part, value in start.items():
      self.assertNotAllClose(meta.theta[f"{part}/log_step_size"], value, msg=part)
    opt = mnemosyne_tf.Mnemosyne(mode="super", weights=summary["path"])
    self.assertEqual(opt._rule.network.config.threshold, 1000)

  def test_resume_continues_exactly_where_it_stopped(self):
    straight = trainer_lib.MetaTrainer(tiny(), self.create_tempdir().full_path)
    straight.train(log=lambda line: None)
    workdir = self.create_tempdir().full_path
    trainer_lib.MetaTrainer(tiny(meta_steps=2), workdir).train(log=lambda line: None)
    lines = []
    resumed = trainer_lib.MetaTrainer(tiny(), workdir)
    resumed.train(log=lines.append)
    self.assertIn("resumed", lines[0])
    for name in straight.theta:
      self.assertAllClose(resumed.theta[name], straight.theta[name], rtol=1e-6, atol=1e-8,
                          msg=name)
    with open(resumed.metrics_path) as f:
      self.assertEqual([json.loads(line)["step"] for line in f], [1, 2, 3, 4])

  def test_zero_query_key_weights_are_a_saddle_and_init_noise_leaves_it(self):
    """At W_Q = W_K = 0 (the hand-set init) the hyperbolic kernel is symmetric
    and their meta-gradient is exactly zero; init_noise moves them off it."""
    stuck = trainer_lib.MetaTrainer(tiny(meta_steps=2), self.create_tempdir().full_path)
    stuck.train(log=lambda line: None)
    self.assertAllEqual(stuck.theta["cam0/key"], tf.zeros_like(stuck.theta["cam0/key"]))
    noisy = trainer_lib.MetaTrainer(tiny(meta_steps=2, init_noise=0.1),
                                    self.create_tempdir().full_path)
    start = noisy.theta["cam0/key"].numpy()
    self.assertGreater(np.abs(start).max(), 0.0)
    noisy.train(log=lambda line: None)
    self.assertNotAllClose(start, noisy.theta["cam0/key"], atol=1e-7, rtol=0)

  def test_varied_horizons_are_whole_segments_in_range_and_resume(self):
    cfg = tiny(horizon=4, unroll=2, max_horizon=40, meta_steps=6)
    meta = trainer_lib.MetaTrainer(cfg, self.create_tempdir().full_path)
    lengths = set()
    for index, traj in enumerate(meta.trajectories):
      for _ in range(30):
        meta._restart(index, traj)
        lengths.add(int(traj.length.numpy()))
    self.assertTrue(all(4 <= n <= 40 and n % 2 == 0 for n in lengths), lengths)
    self.assertGreater(len(lengths), 5)  # they do vary
    # A trajectory runs exactly its own length before it restarts.
    meta = trainer_lib.MetaTrainer(cfg, self.create_tempdir().full_path)
    meta.train(log=lambda line: None)
    traj = meta.trajectories[0]
    self.assertLessEqual(int(traj.position.numpy()), int(traj.length.numpy()))
    workdir = self.create_tempdir().full_path
    trainer_lib.MetaTrainer(tiny(horizon=4, unroll=2, max_horizon=40, meta_steps=3),
                            workdir).train(log=lambda line: None)
    resumed = trainer_lib.MetaTrainer(cfg, workdir)
    resumed.train(log=lambda line: None)
    for name in meta.theta:
      self.assertAllClose(resumed.theta[name], meta.theta[name], rtol=1e-6, atol=1e-8)
    self.assertEqual(int(resumed.trajectories[0].length.numpy()), int(traj.length.numpy()))

  def test_loss_floor_keeps_a_solved_task_in_the_meta_loss(self):
    """With a loss of 0, log(loss) = -inf would drop the segment; the floor
    keeps it finite at log(floor), with a zero gradient there."""
    for floor, finite in ((0.0, False), (1e-4, True)):
      meta = trainer_lib.MetaTrainer(tiny(meta_loss_floor=floor),
                                     self.create_tempdir().full_path)
      traj = meta.trajectories[0]
      meta._restart(0, traj)
      task = traj.task
      task.loss = lambda params, x, y: 0.0 * tf.add_n([tf.reduce_sum(p) for p in params])
      with_gradient, _ = meta._segment_fn(0)
      meta_loss, grad, _, _ = with_gradient(
          {k: v.value() for k, v in meta.theta.items()}, [p.value() for p in traj.params],
          [s.value() for s in traj.states], traj.position.value(),
          tf.constant([0, 0], tf.int32), traj.loss_scale.value())
      self.assertEqual(bool(np.isfinite(meta_loss)), finite, msg=floor)
      if finite:
        self.assertAllClose(meta_loss, np.log(1e-4))

  def test_meta_training_that_has_diverged_stops_and_exports_nothing(self):
    """A theta under which every optimizee diverges never gets a meta-gradient
    again: after MAX_STEPS_WITHOUT_GRADIENT such meta-steps the trainer stops
    with an error instead of exporting it."""
    workdir = self.create_tempdir().full_path
    meta = trainer_lib.MetaTrainer(tiny(init_step_size=1e30, meta_steps=30), workdir)
    limit = trainer_lib.MAX_STEPS_WITHOUT_GRADIENT
    with self.assertRaisesRegex(trainer_lib.MetaTrainingError,
                                f"in {limit} meta-steps in a row \\(meta-steps 1-{limit}\\)"):
      meta.train(log=lambda line: None)
    self.assertFalse(os.path.exists(os.path.join(workdir, "weights.npz")))
    with open(meta.metrics_path) as f:
      records = [json.loads(line) for line in f]
    self.assertEqual([r["step"] for r in records], list(range(1, limit + 1)))
    self.assertTrue(all(r["tasks_used"] == 0 for r in records))

  def test_global_norm_clip_is_exact_when_the_norm_overflows(self):
    """Finite entries whose squares overflow float32: tf.clip_by_global_norm
    gives NaN; ours gives the direction scaled to the clip (float64 reference)."""
    cases = (([1e20, -3e20, 1e-19], [[4e20]], 1e6),  # a tiny entry keeps its share
             ([3e38, -3e38, 2.0 ** 126], [[1e10]], 1.0))  # near float32's largest
    for first, second, clip in cases:
      tensors = [tf.constant(first, tf.float32), tf.constant(second, tf.float32)]
      self.assertFalse(np.all(np.isfinite(tf.clip_by_global_norm(tensors, clip)[0][0])))
      clipped, norm = trainer_lib.clip_by_global_norm(tensors, clip)
      flat = np.concatenate([t.numpy().astype(np.float64).ravel() for t in tensors])
      self.assertAllClose(norm / np.linalg.norm(flat), 1.0, rtol=1e-6, atol=0)
      for got, t in zip(clipped, tensors):
        self.assertEqual(got.dtype, tf.float32)
        self.assertAllClose(got, t.numpy().astype(np.float64) * clip / np.linalg.norm(flat),
                            rtol=1e-6, atol=0)
    self.assertNotEqual(float(trainer_lib.clip_by_global_norm(
        [tf.constant([1e20, -3e20, 1e-19])], 1e6)[0][0][2]), 0.0)
    with self.assertRaisesRegex(ValueError, "non-finite"):
      trainer_lib.clip_by_global_norm([tf.constant([np.inf, 1e20])], 1.0)
    # Otherwise it is tf.clip_by_global_norm, bit for bit.
    small = [tf.constant([3.0, -4.0]), tf.constant([12.0])]
    for clip in (1.0, 100.0):
      ours, ours_norm = trainer_lib.clip_by_global_norm(small, clip)
      theirs, theirs_norm = tf.clip_by_global_norm(small, clip)
      self.assertEqual(ours_norm, float(theirs_norm))
      for a, b in zip(ours, theirs):
        self.assertAllEqual(a, b)

  def test_step_size_calibration_scores_whole_trajectories(self):
    """The calibration's scores equal an eager re-computation of the same
    trajectories (the rule applied step by step outside the compiled segment);
    a diverging multiplier scores +inf; the export takes the best multiplier;
    a rerun reuses the saved scores."""
    multipliers = [0.5, 4.0, 10000.0]
    cfg = tiny(horizon=4, unroll=2, max_horizon=8, meta_steps=2,
               meta_loss_floor=1e-6, calibrate_step_size=multipliers)
    workdir = self.create_tempdir().full_path
    meta = trainer_lib.MetaTrainer(cfg, workdir)
    lines = []
    summary = meta.train(log=lines.append)
    record = summary["step_size_calibration"]
    task, network = meta.trajectories[0].task, meta.network
    theta = meta.theta_values()

    def eager_score(multiplier):
      shifted = dict(theta, log_step_size=np.float32(
          theta["log_step_size"] + np.log(multiplier)))
      params = task.init_params(seed=10 ** 6 + 1000 * cfg.seed)
      states = [network.init_state(p) for p in params]
      start = float(task.loss(params, task.x, task.y))
      losses = []
      for t in range(1, 9):
        if t % 2 == 1:  # a new segment: its batches
          xs, ys = task.batches(tf.constant([cfg.seed + 104729, (t // 2) * 131], tf.int32), 3)
        with tf.GradientTape() as tape:
          tape.watch(params)
          loss = task.loss(params, xs[(t - 1) % 2], ys[(t - 1) % 2])
        grads = tape.gradient(loss, params)
        stepped = [network.apply(shifted, s, g, p, float(t))
                   for p, g, s in zip(params, grads, states)]
        params = [p + u for p, (u, _) in zip(params, stepped)]
        states = [s for _, s in stepped]
        if t in (4, 8):
          losses.append(float(task.loss(params, task.x, task.y)))
          if not np.isfinite(losses[-1]) or losses[-1] > start:
            return None
      if losses[1] > losses[0]:
        return None
      return float(np.mean(np.log(np.maximum(losses, 1e-6))))

    expected = {m: eager_score(m) for m in multipliers}
    self.assertIsNone(expected[10000.0])  # this step size blows the MLP up
    self.assertIsNone(record["scores"]["10000.0"])
    for m in (0.5, 4.0):
      if expected[m] is None:
        self.assertIsNone(record["scores"][str(m)])
      else:
        self.assertAllClose(record["scores"][str(m)], expected[m], rtol=1e-3, atol=1e-4)
    self.assertIsNotNone(expected[0.5])
    best = 0.5 if expected[4.0] is None else min((0.5, 4.0), key=lambda m: expected[m])
    self.assertEqual(record["chosen"], best)
    weights = mnemosyne_tf.Mnemosyne(weights=summary["path"])
    self.assertAllClose(weights._rule.theta["log_step_size"],
                        meta.theta["log_step_size"].numpy() + np.log(best), rtol=0, atol=1e-6)
    self.assertEqual(weights.provenance["step_size_calibration"]["chosen"], best)
    self.assertTrue(any("chosen: x" in line for line in lines), lines)
    # Run again (e.g. after a kill during export): nothing is recomputed.
    again = trainer_lib.MetaTrainer(cfg, workdir)
    again._calibration_run = None  # calling it would raise
    lines = []
    self.assertEqual(again.train(log=lines.append)["sha256"], summary["sha256"])
    self.assertIn("3 already done", " ".join(lines))
    # A stability margin re-chooses from the saved scores: x4 is not 5000x
    # below the unstable x10000, x0.5 is; no multiplier is 10^5x below it.
    margin = trainer_lib.MetaTrainer(
        tiny(**dict(cfg.to_dict(), calibrate_stability_margin=5000.0)), workdir)
    margin._calibration_run = None
    record = margin.train(log=lambda line: None)["step_size_calibration"]
    self.assertEqual(record["chosen"], 0.5)
    with self.assertRaisesRegex(trainer_lib.CalibrationError, "100000x below the first"):
      strict = trainer_lib.MetaTrainer(
          tiny(**dict(cfg.to_dict(), calibrate_stability_margin=1e5)), workdir)
      strict._calibration_run = None
      strict.train(log=lambda line: None)

  def test_zero_meta_steps_exports_the_calibrated_initial_theta(self):
    cfg = tiny(meta_steps=0, calibrate_step_size=[2.0])
    meta = trainer_lib.MetaTrainer(cfg, self.create_tempdir().full_path)
    summary = meta.train(log=lambda line: None)
    opt = mnemosyne_tf.Mnemosyne(weights=summary["path"])
    self.assertEqual(opt.provenance["meta_steps_done"], 0)
    self.assertAllClose(opt._rule.theta["log_step_size"], np.log(2e-3), rtol=0, atol=1e-6)
    with self.assertRaisesRegex(ValueError, "meta_steps must be an integer >= 1"):
      tiny(meta_steps=0)

  def test_adam_rank_calibration_against_keras_adam(self):
    """The "adam_rank" criterion: its Adam reference equals keras's Adam run
    eagerly from the initialization and on the batches of the rule's own
    calibration runs (checked here through the rule's recorded start loss and
    the seed helpers both use), for every task of the config and every grid
    point; each multiplier's score is the mean number of stable grid runs with
    a lower loss, recounted here from those independent runs. The reference
    is dense Adam: the language model's embedding gets IndexedSlices
    gradients, densified here before keras applies them (keras's sparse path
    updates the moments of the rows a batch touches only)."""
    import keras
    multipliers = [0.5, 2.0]
    names = ["wine_mlp_32_relu", "iris_mlp_16_relu", "descr_lm_32"]
    cfg = tiny(tasks=names, horizon=4, unroll=2, meta_steps=0, calibrate_horizon=8,
               meta_loss_floor=1e-6, calibrate_step_size=multipliers,
               calibrate_criterion="adam_rank")
    workdir = self.create_tempdir().full_path
    meta = trainer_lib.MetaTrainer(cfg, workdir)
    summary = meta.train(log=lambda line: None)
    record = summary["step_size_calibration"]
    self.assertEqual(record["criterion"], "adam_rank")

    def keras_adam(task, index, lr):
      return replay_calibration_run(meta, index, keras.optimizers.Adam(lr))

    counts = {m: [] for m in multipliers}
    for index, name in enumerate(names):
      task = meta.trajectories[index].task
      start = float(task.loss(task.init_params(meta._calibration_init_seed(index)),
                              task.x, task.y))
      # The rule's calibration runs started from the same initialization.
      self.assertAllClose(record["per_task"]["0.5"][name]["start"], start, rtol=1e-6)
      reference = {lr: keras_adam(task, index, lr) for lr in trainer_lib.ADAM_GRID}
      stable = {lr: all(np.isfinite(v) and v <= start for v in l.values())
                for lr, l in reference.items()}
      saved = record["adam_reference"][name]
      for lr, losses in reference.items():
        self.assertEqual(saved[f"{lr:g}"]["stable"], stable[lr], msg=(name, lr))
        if stable[lr]:
          for t in (4, 8):
            self.assertAllClose(saved[f"{lr:g}"][str(t)], losses[t], rtol=1e-4, atol=1e-6)
      for m in multipliers:
        run = record["per_task"][str(m)][name]
        counts[m].append(None if run["diverged"] else [
            sum(stable[lr] and reference[lr][t] < run["loss"][str(t)] for lr in reference)
            for t in (4, 8)])
    for m in multipliers:
      if any(c is None for c in counts[m]):
        self.assertIsNone(record["scores"][str(m)])
      else:
        self.assertEqual(record["scores"][str(m)], np.mean(counts[m]))
    scores = {m: record["scores"][str(m)] for m in multipliers}
    self.assertEqual(record["chosen"], trainer_lib.choose_multiplier(
        {m: float("inf") if v is None else v for m, v in scores.items()}))
    # A rerun reuses the Adam reference (nothing recomputed).
    again = trainer_lib.MetaTrainer(cfg, workdir)
    again._adam_run = None  # calling it would raise
    self.assertEqual(again.train(log=lambda line: None)["sha256"], summary["sha256"])

  def test_calibration_runs_the_early_boost_as_the_keras_optimizer_does(self):
    """With an early boost, each calibration run's losses equal those of the
    Keras optimizer running the exported weights eagerly from the same
    initialization on the same batches: the boost acts on the MLP, not on
    the language model (it has attention kernels); without the boost the
    MLP's losses differ and the language model's do not."""
    import keras
    names = ["wine_mlp_32_relu", "descr_lm_32"]
    cfg = tiny(tasks=names, horizon=4, unroll=2, meta_steps=0, calibrate_horizon=8,
               meta_loss_floor=1e-6, calibrate_step_size=[1.0],
               network_config={"early_boost": 8.0, "early_boost_steps": 6})
    meta = trainer_lib.MetaTrainer(cfg, self.create_tempdir().full_path)
    summary = meta.train(log=lambda line: None)
    runs = summary["step_size_calibration"]["per_task"]["1.0"]

    def keras_losses(index, overrides=None):
      losses = replay_calibration_run(meta, index, mnemosyne_tf.LearnedOptimizer(
          weights=summary["path"], network_overrides=overrides))
      return {str(t): loss for t, loss in losses.items()}

    off = {"early_boost": 1.0, "early_boost_steps": 0}
    for index, name in enumerate(names):
      boosted = keras_losses(index)
      for t in ("4", "8"):
        self.assertAllClose(runs[name]["loss"][t], boosted[t], rtol=1e-4, msg=(name, t))
      plain = keras_losses(index, off)
      if name == "descr_lm_32":
        self.assertAllClose(plain, boosted, rtol=1e-6)
      else:
        self.assertGreater(abs(plain["4"] - boosted["4"]), 1e-3 * boosted["4"])

  def test_calibration_over_several_initializations(self):
    """calibrate_seeds=2: each task is calibrated from two initializations with
    their own batches. The first is exactly the single run of calibrate_seeds=1;
    the second's Adam reference equals keras's Adam run eagerly from its own
    initialization and batches; a multiplier's score counts both runs."""
    import keras
    base = dict(horizon=4, unroll=2, meta_steps=0, calibrate_horizon=8, meta_loss_floor=1e-6,
                calibrate_step_size=[0.5, 2.0], calibrate_criterion="adam_rank")
    single = trainer_lib.MetaTrainer(tiny(**base), self.create_tempdir().full_path)
    one = single.train(log=lambda line: None)["step_size_calibration"]
    meta = trainer_lib.MetaTrainer(tiny(calibrate_seeds=2, **base),
                                   self.create_tempdir().full_path)
    lines = []
    two = meta.train(log=lines.append)["step_size_calibration"]
    self.assertIn("x 2 initializations", " ".join(lines))
    name = "wine_mlp_32_relu"
    keys = {name, f"{name}/seed1"}
    self.assertEqual(set(two["adam_reference"]), keys)
    for m in ("0.5", "2.0"):
      self.assertEqual(set(two["per_task"][m]), keys)
      self.assertEqual(two["per_task"][m][name], one["per_task"][m][name])
      self.assertNotEqual(two["per_task"][m][f"{name}/seed1"]["start"],
                          two["per_task"][m][name]["start"])
    self.assertEqual(two["adam_reference"][name], one["adam_reference"][name])
    task = meta.trajectories[0].task
    init_seed = meta._calibration_init_seed(0, 1)
    self.assertNotEqual(init_seed, meta._calibration_init_seed(0, 0))
    start = float(task.loss(task.init_params(init_seed), task.x, task.y))
    self.assertAllClose(two["per_task"]["0.5"][f"{name}/seed1"]["start"], start, rtol=1e-6)
    for lr in (1e-3, 1e-1):
      losses = replay_calibration_run(meta, 0, keras.optimizers.Adam(lr), replica=1)
      saved = two["adam_reference"][f"{name}/seed1"][f"{lr:g}"]
      stable = all(np.isfinite(v) and v <= start for v in losses.values())
      self.assertEqual(saved["stable"], stable)
      if stable:
        for t in (4, 8):
          self.assertAllClose(saved[str(t)], losses[t], rtol=1e-4, atol=1e-6)
    for m in ("0.5", "2.0"):
      runs = {k: dict(r, loss={int(h): v for h, v in r["loss"].items()})
              for k, r in two["per_task"][m].items()}
      expected = trainer_lib.adam_rank(runs, two["adam_reference"])
      self.assertEqual(two["scores"][m], None if expected == float("inf") else expected)

  def test_adam_rank_counts_stable_grid_runs_with_a_lower_loss(self):
    adam = {"a": {"0.001": {"200": 0.2, "2000": 0.01, "stable": True},
                  "0.01": {"200": 0.05, "2000": 1e-4, "stable": True},
                  "0.1": {"200": None, "2000": None, "stable": False}},
            "b": {"0.001": {"200": 0.3, "2000": 0.1, "stable": True},
                  "0.01": {"200": 0.1, "2000": 0.02, "stable": True},
                  "0.1": {"200": 0.01, "2000": 1e-3, "stable": True}}}
    runs = {"a": {"diverged": False, "loss": {200: 0.1, 2000: 1e-3}},
            "b": {"diverged": False, "loss": {200: 0.2, 2000: 1e-4}}}
    # a: 1 grid run lower at 200 (0.05), 1 at 2000 (1e-4); b: 2 at 200, 0 at 2000.
    self.assertEqual(trainer_lib.adam_rank(runs, adam), 1.0)
    runs["b"]["diverged"] = True
    self.assertEqual(trainer_lib.adam_rank(runs, adam), float("inf"))

  def test_behind_adam_compares_each_task_s_mean_over_its_initializations(self):
    adam = {"a": {"0.001": {"200": 0.2, "2000": 0.01}}, "a/seed1": {"0.001": {"200": 0.4,
                                                                           "2000": 0.03}},
            "b": {"0.001": {"200": 0.3, "2000": 0.1}}}
    # a at 200: mean 0.25 against Adam's 0.3 (seed 1 alone is behind: 0.5 > 0.4);
    # a at 2000: 0.025 against 0.02; b at 200: equal (not behind); b at 2000: ahead.
    runs = {"a": {"loss": {200: 0.0, 2000: 0.01}}, "a/seed1": {"loss": {200: 0.5, 2000: 0.04}},
            "b": {"loss": {200: 0.3, 2000: 0.01}}}
    self.assertEqual(trainer_lib.behind_adam(runs, adam, 0.001), ["a@2000"])
    runs["b"]["loss"][200] = 0.31
    self.assertEqual(sorted(trainer_lib.behind_adam(runs, adam, 0.001)), ["a@2000", "b@200"])
    # A diverged rule run (no loss past its divergence) is behind; an unstable
    # Adam run is a floor any rule meets.
    runs["b"]["loss"] = {200: 0.1, 2000: None}
    self.assertEqual(sorted(trainer_lib.behind_adam(runs, adam, 0.001)), ["a@2000", "b@2000"])
    adam["a/seed1"]["0.001"]["stable"] = False
    self.assertEqual(trainer_lib.behind_adam(runs, adam, 0.001), ["b@2000"])

  def test_calibration_with_an_adam_floor_chooses_among_the_multipliers_that_keep_it(self):
    # Tiny run: the rule at x1e-3 barely moves, so it is behind Adam(0.1) on the
    # task; the floor leaves no multiplier there (nothing exported), and at
    # Adam(1e-4) it keeps the choice of the criterion alone.
    workdir = self.create_tempdir().full_path
    cfg = tiny(meta_steps=0, calibrate_step_size=[0.001, 1.0], calibrate_criterion="adam_rank",
               calibrate_adam_floor=0.1)
    with self.assertRaisesRegex(trainer_lib.CalibrationError, r"at or below Adam\(0.1\)"):
      trainer_lib.MetaTrainer(cfg, workdir).train(log=lambda line: None)
    self.assertFalse(os.path.exists(os.path.join(workdir, "weights.npz")))
    lines = []
    low = tiny(**dict(cfg.to_dict(), calibrate_adam_floor=0.0001))
    summary = trainer_lib.MetaTrainer(low, workdir).train(log=lines.append)  # reuses both
    self.assertTrue(os.path.exists(os.path.join(workdir, "weights.npz")))
    calibration = summary["step_size_calibration"]
    allowed = {float(m) for m, behind in calibration["behind_adam_floor"].items() if not behind}
    scores = {float(m): s for m, s in calibration["scores"].items()}
    self.assertEqual(calibration["chosen"], trainer_lib.choose_multiplier(scores, 1.0, allowed))
    self.assertTrue(any("x0.001: behind Adam(0.0001): " in line for line in lines), lines)

  def test_calibration_with_no_stable_multiplier_exports_nothing(self):
    workdir = self.create_tempdir().full_path
    meta = trainer_lib.MetaTrainer(tiny(meta_steps=0, calibrate_step_size=[10000.0]), workdir)
    with self.assertRaisesRegex(trainer_lib.CalibrationError, "not exporting"):
      meta.train(log=lambda line: None)
    self.assertFalse(os.path.exists(os.path.join(workdir, "weights.npz")))
    with open(os.path.join(workdir, "calibration.json")) as f:
      self.assertTrue(json.load(f)["runs"][0][1]["per_task"]["wine_mlp_32_relu"]["diverged"])

  def test_rise_tolerance_tells_a_plateau_from_a_blow_up(self):
    # Attempt 28's iris runs (coordinate_v2.md): 0.043095 at 200 steps, then
    # 0.043100 (x4, a 0.01% rise) and 0.0446 against 0.0398 (x8, 12%).
    self.assertTrue(trainer_lib.rose(0.043095, 0.043100))
    self.assertFalse(trainer_lib.rose(0.043095, 0.043100, 0.05))
    self.assertTrue(trainer_lib.rose(0.0398, 0.0446, 0.05))
    self.assertFalse(trainer_lib.rose(0.0398, 0.0446, 0.2))
    self.assertFalse(trainer_lib.rose(0.5, 0.5))  # level is not a rise
    self.assertFalse(trainer_lib.rose(0.5, 0.4))
    self.assertTrue(trainer_lib.rose(0.0, 1e-12, 1.0))  # from 0 any rise counts

  def test_calibration_applies_the_rise_tolerance_to_every_run(self):
    # Whatever the runs do, each one's verdict is the one its recorded losses
    # give under the config's tolerance: NaN/Inf or above the start at a
    # horizon, or a rise beyond the tolerance between the two horizons.
    workdir = self.create_tempdir().full_path

    def calibrate(tolerance):
      """Checks every run's verdict; returns how many runs are stable only
      thanks to the tolerance."""
      cfg = tiny(meta_steps=0, horizon=4, unroll=2, calibrate_horizon=8,
                 calibrate_step_size=[0.5, 4.0, 64.0], calibrate_rise_tolerance=tolerance)
      try:
        trainer_lib.MetaTrainer(cfg, workdir).train(log=lambda line: None)
      except trainer_lib.CalibrationError:
        pass  # nothing stable: the record is written all the same
      with open(os.path.join(workdir, "calibration.json")) as f:
        saved = json.load(f)
      # Identities saved before the option (tolerance 0) stay valid: the key
      # is only there when the tolerance is on.
      self.assertEqual("calibrate_rise_tolerance" in saved["identity"], tolerance > 0)
      runs = saved["runs"]
      verdicts, tolerated = 0, 0
      for _, entry in runs:
        for run in entry["per_task"].values():
          at4, at8 = run["loss"]["4"], run["loss"]["8"]
          bad = [x is None or not math.isfinite(x) or x > run["start"] for x in (at4, at8)]
          want = bad[0] or bad[1] or trainer_lib.rose(at4, at8, tolerance)
          self.assertEqual(run["diverged"], want, msg=(tolerance, run))
          verdicts += 1
          tolerated += not want and trainer_lib.rose(at4, at8)  # unstable at tolerance 0
      self.assertEqual(verdicts, 3 * len(cfg.tasks))
      return tolerated

    # This config has such a run (x64: 0.097 at 4 steps, 0.143 at 8), so the
    # tolerance is exercised, not only the verdicts that do not depend on it.
    self.assertGreater(calibrate(1.0), 0)
    # The same workdir without the tolerance: had the saved runs been reused,
    # that run's verdict (stable) would fail the per-run check at tolerance 0.
    calibrate(0.0)

  def test_calibration_chooses_below_the_first_unstable_multiplier(self):
    inf = float("inf")
    choose = trainer_lib.choose_multiplier
    self.assertEqual(choose({0.5: -4.8, 1.0: -6.0, 2.0: inf, 4.0: -6.1, 8.0: -5.4}), 1.0)
    self.assertEqual(choose({4.0: -7.0, 0.5: -4.0, 2.0: -6.5, 1.0: -5.0}), 4.0)
    self.assertEqual(choose({0.5: -5.0, 2.0: -5.0, 1.0: -4.0}), 0.5)  # tie: nearer to 1
    self.assertEqual(choose({0.5: -5.0, 2.0: -5.0}), 0.5)
    self.assertIsNone(choose({0.5: inf, 1.0: -9.0}))
    # A stability margin: at least that factor below the first unstable one.
    scores = {0.125: -4.0, 0.25: -5.1, 0.5: -5.8, 1.0: inf, 2.0: inf}
    self.assertEqual(choose(scores), 0.5)
    self.assertEqual(choose(scores, margin=2.0), 0.5)
    self.assertEqual(choose(scores, margin=4.0), 0.25)
    self.assertEqual(choose(scores, margin=8.0), 0.125)
    self.assertIsNone(choose(scores, margin=16.0))
    # Only among `allowed` (calibrate_adam_floor), after the margin.
    self.assertEqual(choose(scores, allowed={0.125, 0.5}), 0.5)
    self.assertEqual(choose(scores, margin=4.0, allowed={0.125, 0.5}), 0.125)
    self.assertIsNone(choose(scores, margin=4.0, allowed={0.5}))
    self.assertEqual(choose({0.5: -5.0, 1.0: -6.0}, margin=4.0), 1.0)  # nothing unstable

  @parameterized.parameters(("digits_mlp_32_relu", 8), ("wine_ft_16", 4))
  def test_second_order_meta_gradient_matches_finite_differences(self, task, unroll):
    """With second_order the meta-gradient is the exact derivative of the
    segment's meta-loss: its projection on a random direction equals a central
    finite difference of the compiled forward pass. digits has always-blank
    pixels, whose weights get exactly zero gradients (v = 0): still finite.
    wine_ft_16 is a transformer (Keras MultiHeadAttention and Dense on
    tokens), whose second-order gradient XLA compiles only with the static
    reductions of meta/static_gradients.py."""
    cfg = tiny(tasks=[task], horizon=8, unroll=unroll, init_noise=0.1,
               second_order=True, init_step_size=0.01,
               network_config={"output_normalization": "none", "gradient_eps": 1e-7})
    meta = trainer_lib.MetaTrainer(cfg, self.create_tempdir().full_path)
    traj = meta.trajectories[0]
    meta._restart(0, traj)
    with_gradient, forward = meta._segment_fn(0)
    theta = {k: v.value() for k, v in meta.theta.items()}
    args = ([p.value() for p in traj.params], [s.value() for s in traj.states],
            traj.position.value(), tf.constant([3, 1]), tf.constant(1.0))
    _, grad, _, _ = with_gradient(theta, *args)
    for name, g in grad.items():
      self.assertTrue(np.all(np.isfinite(g.numpy())), name)
    rng = np.random.RandomState(0)
    direction = {k: tf.constant(rng.normal(size=v.shape).astype(np.float32))
                 for k, v in theta.items()}
    projected = sum(float(tf.reduce_sum(grad[k] * direction[k])) for k in theta)
    eps = 1e-2
    plus = forward({k: theta[k] + eps * direction[k] for k in theta}, *args)[0]
    minus = forward({k: theta[k] - eps * direction[k] for k in theta}, *args)[0]
    self.assertAllClose(projected, float(plus - minus) / (2 * eps), rtol=2e-2)

  @parameterized.parameters(False, True)
  def test_task_meta_gradients_are_recorded_and_optionally_normalized(self, normalize):
    """metrics.jsonl records each task's meta-gradient norm; with
    meta_grad_task_normalization the meta-step averages the tasks'
    meta-gradients each divided by its norm, else the plain ones. Checked
    against the segments recomputed by a second trainer in the same state."""
    cfg = tiny(tasks=["wine_mlp_32_relu", "iris_mlp_16_relu"], meta_steps=1,
               init_noise=0.1, meta_grad_task_normalization=normalize)
    meta = trainer_lib.MetaTrainer(cfg, self.create_tempdir().full_path)
    seen = []
    apply = meta._apply_meta_gradient
    meta._apply_meta_gradient = lambda grads: seen.append(grads) or apply(grads)
    meta.train(log=lambda line: None)
    with open(meta.metrics_path) as f:
      recorded = json.loads(f.readline())["per_task_grad_norm"]

    other = trainer_lib.MetaTrainer(cfg, self.create_tempdir().full_path)
    theta = {k: v.value() for k, v in other.theta.items()}
    for index, (name, traj) in enumerate(zip(cfg.tasks, other.trajectories)):
      other._restart(index, traj)
      with_gradient, _ = other._segment_fn(index)
      _, grad, _, _ = with_gradient(
          theta, [p.value() for p in traj.params], [s.value() for s in traj.states],
          traj.position.value(), tf.constant([cfg.seed, index], tf.int32),
          traj.loss_scale.value())
      norm = np.sqrt(sum(float(tf.reduce_sum(g ** 2)) for g in grad.values()))
      self.assertGreater(norm, 0)
      self.assertAllClose(recorded[name], norm, rtol=1e-4)
      for k, g in grad.items():
        self.assertAllClose(seen[0][index][k], g / norm if normalize else g,
                            rtol=1e-4, atol=1e-7)

  def test_es_estimator_updates_theta(self):
    meta = trainer_lib.MetaTrainer(tiny(estimator="es", es_pairs=2, meta_steps=2),
                                   self.create_tempdir().full_path)
    before = meta.theta["head/w1"].numpy()
    meta.train(log=lambda line: None)
    self.assertNotAllClose(before, meta.theta["head/w1"])

  def test_binary_refuses_a_bad_config_before_doing_anything(self):
    workdir = self.create_tempdir().full_path
    bad = os.path.join(workdir, "bad.yaml")
    with open(bad, "w") as f:
      f.write("tasks: [digits_vit_32]\nmeta_steps: 0\n")
    out = subprocess.run(
        [sys.executable, "-m", "mnemosyne_tf.meta.train", f"--config={bad}",
         f"--workdir={workdir}/run"], capture_output=True, text=True, cwd=_ROOT,
        env=dict(os.environ, PYTHONPATH=_ROOT), check=False)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn("held out", out.stderr)
    self.assertIn("meta_steps", out.stderr)
    self.assertFalse(os.path.exists(os.path.join(workdir, "run")))


if __name__ == "__main__":
  tf.test.main()
