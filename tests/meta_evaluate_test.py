"""Held-out evaluation: runs are comparable, and the table counts correctly."""

import math
import os

import tensorflow as tf

from mnemosyne_tf.meta import evaluate
from mnemosyne_tf.meta import tasks
from mnemosyne_tf.meta import train


def curve(*losses, every=10):
  return {"steps": [every * i for i in range(len(losses))], "loss": list(losses)}


class EvaluateTest(tf.test.TestCase):

  def test_grid_is_seven_log_spaced_points(self):
    self.assertLen(tasks.ADAM_GRID, 7)
    self.assertEqual(tasks.ADAM_GRID[0], 1e-4)
    self.assertEqual(tasks.ADAM_GRID[-1], 0.1)
    self.assertIn(0.001, tasks.ADAM_GRID)

  def test_runs_start_from_the_same_point_and_are_deterministic(self):
    task = tasks.Task(tasks.get_spec("wine_mlp_32_relu"))
    a = evaluate.train_curve(task, "adam:0.01", 8, seed=1, record_every=4)
    b = evaluate.train_curve(task, "adam:0.01", 8, seed=1, record_every=4)
    m = evaluate.train_curve(task, "mnemosyne:hand_set_v0", 8, seed=1, record_every=4)
    self.assertEqual(a, b)
    self.assertEqual(a["loss"][0], m["loss"][0])
    self.assertEqual(a["steps"], [0, 4, 8])
    self.assertLess(a["loss"][-1], a["loss"][0])

  def test_masked_lm_curve_matches_a_replay_with_fresh_masks(self):
    # The evaluation's training loop on a masked LM: batches drawn as for
    # every task, masks drawn afresh per step (Task.mask), the loss over the
    # masked tokens only (Task.loss), whole-set loss on the dataset's masks.
    # Replayed here with plain SGD through the task's pure loss.
    import keras
    task = tasks.Task(tasks.get_spec("stdlib_mlm_32x32"))
    seed, steps, lr = 2, 4, 0.5
    got = evaluate.train_curve(task, lambda: keras.optimizers.SGD(lr), steps, seed=seed,
                               record_every=steps)
    params = task.init_params(seed)
    self.assertAllClose(got["loss"][0], task.loss(params, task.x, task.y), rtol=1e-5)
    for step in range(steps):
      index = tf.random.stateless_uniform([task.spec.batch_size], [seed, step],
                                          maxval=task.size, dtype=tf.int32)
      tokens = tf.gather(task.y, index)
      x = task.mask(tokens, tf.random.experimental.stateless_fold_in([seed, step], 1))
      with tf.GradientTape() as tape:
        tape.watch(params)
        loss = task.loss(params, x, tokens)
      params = [p - lr * tf.convert_to_tensor(g)  # embeddings: IndexedSlices
                for p, g in zip(params, tape.gradient(loss, params))]
    want = float(task.loss(params, task.x, task.y))
    self.assertAllClose(got["loss"][-1], want, rtol=1e-4)
    self.assertLess(want, got["loss"][0])

  def test_runs_of_an_earlier_evaluation_are_keyed_like_new_runs(self):
    spec = "adam:0.01"
    earlier = {"steps": 8, "seed": 1, "optimizers": {"adam 0.01": spec},
               "results": {"wine_mlp_32_relu": {"adam 0.01": curve(1.0, 0.5)}}}
    runs = evaluate.runs_of(earlier)
    self.assertEqual(runs, {evaluate.run_key("wine_mlp_32_relu", spec, 8, 1): curve(1.0, 0.5)})
    self.assertNotIn(evaluate.run_key("wine_mlp_32_relu", spec, 8, 1, jit_compile=True), runs)

  def test_runs_of_weights_that_are_gone_are_left_out(self):
    gone = os.path.join(self.create_tempdir().full_path, "deleted.npz")
    earlier = {"steps": 8, "seed": 1,
               "optimizers": {"adam 0.01": "adam:0.01", "old": "mnemosyne:" + gone},
               "results": {"wine_mlp_32_relu": {"adam 0.01": curve(1.0, 0.5),
                                                "old": curve(1.0, 0.25)}},
               "stability_curves": {"old": curve(1.0, 0.1, every=4)}}
    runs = evaluate.runs_of(earlier)
    self.assertEqual(runs, {evaluate.run_key("wine_mlp_32_relu", "adam:0.01", 8, 1):
                            curve(1.0, 0.5)})

  def test_config_overrides_are_part_of_a_run_s_identity(self):
    self.assertEqual(evaluate.parse_weights("tensor_v1+threshold=7+small_mode=coordinate"),
                     ("tensor_v1", {"threshold": 7, "small_mode": "coordinate"}))
    with self.assertRaisesRegex(ValueError, "field=value"):
      evaluate.parse_weights("tensor_v1+threshold")
    self.assertEqual(evaluate.parse_weights("t+a=true+b=False+c=0.5"),
                     ("t", {"a": True, "b": False, "c": 0.5}))
    # A weights file whose path contains '+' is taken whole.
    path = os.path.join(self.create_tempdir().full_path, "a+b=1.npz")
    open(path, "wb").close()
    self.assertEqual(evaluate.parse_weights(path), (path, {}))
    # Same theta, another config: another run.
    plain = evaluate.run_key("t", "mnemosyne:tensor_v1", 8, 1)
    gated = evaluate.run_key("t", "mnemosyne:tensor_v1+gradient_eps=1e-07", 8, 1)
    self.assertNotEqual(plain, gated)
    self.assertEqual(gated, evaluate.run_key("t", "mnemosyne:tensor_v1+gradient_eps=1e-07", 8, 1))
    opt = evaluate.make_optimizer("mnemosyne:tensor_v1+gradient_eps=1e-07")
    self.assertEqual(opt._rule.network.config.gradient_eps, 1e-7)
    self.assertAllClose(evaluate.make_optimizer("adam:0.01").learning_rate, 0.01)
    for bad in ("adam:abc", "adam:0", "adam:-1", "adam:inf", "adam:nan"):
      with self.assertRaisesRegex(ValueError, "Adam's learning rate must be a number > 0"):
        evaluate.make_optimizer(bad)

  def test_summary_counts_better_grid_points_and_divergence(self):
    results = {"t": {"adam 0.001": curve(2.0, 1.0, 0.5), "adam 0.01": curve(2.0, 0.3, 0.2),
                     "mine": curve(2.0, 0.4, 0.1), "bad": curve(2.0, float("nan"))}}
    table, verdicts = evaluate.summarize(results, horizon=10, steps=20,
                                         learned_labels=["mine", "bad"])
    self.assertEqual(verdicts["mine"]["t"]["grid_points_better"], [1, 0])
    self.assertEqual(verdicts["mine"]["t"]["beats_adam_1e-3"], [True, True])
    self.assertTrue(verdicts["bad"]["t"]["diverged"])
    self.assertTrue(math.isinf(evaluate.loss_at(results["t"]["bad"], 20)))
    # A NaN loss compares as the worst: every grid point is better than it.
    nan_at_20 = {"steps": [0, 10, 20], "loss": [2.0, 0.1, float("nan")]}
    _, nan_verdicts = evaluate.summarize({"t": dict(results["t"], nan=nan_at_20)}, 10, 20,
                                         ["nan"])
    self.assertEqual(nan_verdicts["nan"]["t"]["grid_points_better"], [0, 2])
    self.assertEqual(nan_verdicts["nan"]["t"]["beats_adam_1e-3"], [True, False])
    self.assertIn("| t | mine | 0.4000 | 0.1000 | 1 / 0 |", table)
    self.assertTrue(evaluate.diverged(curve(1.0, 0.5, 1.5)))
    self.assertFalse(evaluate.diverged(curve(1.0, 1.5, 0.5)))

  def test_reuse_of_a_file_that_is_not_an_evaluation_fails_before_writing(self):
    from absl import app
    from absl import flags
    from tests import testing
    if "reuse" not in flags.FLAGS:
      evaluate.define_flags()
    tmp = self.create_tempdir().full_path
    runs = os.path.join(tmp, "runs.json")
    with open(runs, "w") as f:
      f.write('{"digits_vit_32|adam:0.01|2000|0": {}}')  # a run cache, not an evaluation
    out_dir = os.path.join(tmp, "out")
    with self.assertRaisesRegex(app.UsageError, r"runs.json is not an evaluation.json"):
      testing.run_main(evaluate.main, weights=["hand_set_v0"], tasks=["digits_vit_32"],
                       reuse=[runs], out_dir=out_dir)
    self.assertFalse(os.path.exists(out_dir))


class WorkdirTest(tf.test.TestCase):

  def test_a_workdir_refuses_a_different_config(self):
    from mnemosyne_tf.meta import config as config_lib
    workdir = self.create_tempdir().full_path
    cfg = config_lib.MetaTrainConfig()
    train.check_workdir_config(workdir, cfg)
    longer = config_lib.MetaTrainConfig.from_dict(dict(cfg.to_dict(), meta_steps=5000))
    train.check_workdir_config(workdir, longer)  # more steps: fine (resume)
    recalibrated = config_lib.MetaTrainConfig.from_dict(dict(
        longer.to_dict(), calibrate_step_size=[0.5, 1.0], calibrate_seeds=2,
        calibrate_stability_margin=2.0, calibrate_rise_tolerance=0.05))
    train.check_workdir_config(workdir, recalibrated)  # a calibration added to it: fine
    other = config_lib.MetaTrainConfig.from_dict(dict(cfg.to_dict(), seed=9))
    with self.assertRaisesRegex(ValueError, r"different config \(fields \['seed'\]"):
      train.check_workdir_config(workdir, other)
    self.assertTrue(os.path.exists(os.path.join(workdir, "config.yaml")))

  def test_retracing_warnings_of_per_task_functions_are_dropped_others_kept(self):
    import logging

    class Capture(logging.Handler):
      def __init__(self):
        super().__init__()
        self.messages = []

      def emit(self, record):
        self.messages.append(record.getMessage())

    # Like the trainer's: one tf.function per task from the same code. TF
    # warns at most twice per code object, so each phase has its own.
    def make_before():
      @tf.function
      def segment(x):
        return x * 2.0
      return segment

    def make_after():
      @tf.function
      def segment(x):
        return x * 3.0
      return segment

    logger = tf.get_logger()
    capture = Capture()
    logger.addHandler(capture)
    saved_filters = list(logger.filters)
    try:
      for _ in range(7):
        make_before()(tf.constant(1.0))
      self.assertTrue(any("retracing" in m for m in capture.messages))  # TF warns
      capture.messages.clear()
      train.quiet_retracing_warnings()
      train.quiet_retracing_warnings()  # installs one filter, not two
      self.assertLen(logger.filters, len(saved_filters) + 1)
      for _ in range(7):
        make_after()(tf.constant(1.0))
      logger.warning("another warning")
      self.assertEqual(capture.messages, ["another warning"])
    finally:
      logger.removeHandler(capture)
      logger.filters[:] = saved_filters


if __name__ == "__main__":
  tf.test.main()
