"""Tests of the pipelines.train driver: bad runs fail at start, a killed run
resumes exactly, two workers train as one (MultiWorkerMirroredStrategy)."""

import json
import os
import shutil
import signal
import tempfile
import time

from absl.testing import parameterized
import tensorflow as tf

from pipelines import train
from tests import pipeline_testing as pt
from tests import testing

STEPS = 60  # the runs' length (a margin for the kill); checkpoints every 5 steps
WORKER_STEPS = 20  # the multi-worker run's (its steps are slow on CPU)


class BadRunsFailAtStartTest(tf.test.TestCase, parameterized.TestCase):
  """Every bad path or value is named, and nothing is written to model_dir."""

  def _prepare(self, config_files=(pt.TINY_CONFIG,), override=None, mode="train",
               experiment=pt.EXPERIMENT, model_dir=None):
    model_dir = model_dir or os.path.join(self.create_tempdir().full_path, "run")
    try:
      train.prepare(experiment, mode, model_dir, list(config_files), override)
    finally:
      self.assertFalse(os.path.exists(model_dir) and os.listdir(model_dir))

  @parameterized.named_parameters(
      ("unknown_experiment", dict(experiment="mnemosyne/nope"),
       r"unknown experiment 'mnemosyne/nope'; registered: \[.*mnemosyne/vit_finetuning"),
      ("missing_config_file", dict(config_files=["no/such.yaml"]),
       "config file not found: no/such.yaml"),
      ("unknown_key", dict(override="task.model.hidden=3"), "hidden"),
      ("missing_init_checkpoint", dict(override="task.init_checkpoint=/no/such/ckpt"),
       "task.init_checkpoint '/no/such/ckpt': no checkpoint there"),
      ("classes_and_head_disagree", dict(override="task.model.num_classes=3"),
       "task.train_data.classes has 5 classes but task.model.num_classes is 3"),
      ("bad_digit", dict(override="task.validation_data.classes=[5,6,7,8,12]"),
       "task.validation_data.classes must be distinct digits 0-9"),
      ("unknown_vit", dict(override="task.model.backbone.model_name=vit-x1"),
       "model_name 'vit-x1' is not one of official's ViT specs"),
      ("patch_does_not_divide", dict(override="task.model.backbone.patch_size=3"),
       "image_size 8 is not a multiple of the patch size 3"),
      ("missing_weights_file",
       dict(override="trainer.optimizer_config.optimizer.mnemosyne.weights=/no/w.npz"),
       "invalid trainer.optimizer_config: .*/no/w.npz"),
      ("zero_steps", dict(override="trainer.train_steps=0"), "train_steps must be positive"),
      ("tpu_strategy_without_tpu",
       dict(override="runtime.distribution_strategy=tpu"), "needs --tpu"),
      ("unknown_strategy", dict(override="runtime.distribution_strategy=ring"),
       "distribution strategy must be one of"),
      ("eval_without_checkpoint", dict(mode="eval"), "no checkpoint to evaluate"),
  )
  def test_fails_with_a_message_naming_the_problem(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      self._prepare(**kwargs)

  def test_model_dir_that_is_a_file(self):
    path = self.create_tempfile().full_path
    with self.assertRaisesRegex(ValueError, "exists and is not a directory"):
      train.prepare(pt.EXPERIMENT, "train", path, [pt.TINY_CONFIG])

  def test_command_line_exits_with_the_message_before_writing(self):
    model_dir = os.path.join(self.create_tempdir().full_path, "run")
    stdout, exited = testing.run_main(
        train.main, experiment=pt.EXPERIMENT, mode="train", model_dir=model_dir,
        config_file=[pt.TINY_CONFIG], params_override="task.model.num_classes=3")
    message = str(exited.code)
    self.assertStartsWith(message, "pipelines.train: error: invalid mnemosyne/vit_finetuning")
    self.assertIn("task.model.num_classes is 3", message)
    self.assertEqual(stdout, "")
    self.assertFalse(os.path.exists(model_dir))


class RestartAndWorkersTest(tf.test.TestCase):
  """Runs of the command with Mnemosyne on the smallest ViT: one SIGKILLed
  after its checkpoint at step KILL_AFTER or later and started again, two
  MultiWorkerMirroredStrategy workers on 127.0.0.1 (subprocesses, started
  together), and an uninterrupted single-worker reference (in this process)."""

  KILL_AFTER = 5

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.killed_dir = os.path.join(cls.dir, "killed")
    cls.killed = pt.start(
        pt.train_argv(cls.killed_dir, pt.overrides(pt.NO_BLOCKS, **{"trainer.train_steps": 10**6})),
        os.path.join(cls.dir, "killed.log"))
    ports = [pt.free_port(), pt.free_port()]
    cls.worker_dirs = [os.path.join(cls.dir, f"worker{i}") for i in range(2)]
    cls.workers = [
        pt.start(pt.train_argv(cls.worker_dirs[i],
                               pt.overrides(pt.NO_BLOCKS,
                                            **{"trainer.train_steps": WORKER_STEPS})),
                 os.path.join(cls.dir, f"worker{i}.log"),
                 tf_config=json.dumps({
                     "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": i}}))
        for i in range(2)]
    cls.killed_at = cls._kill_after_step(cls.killed, cls.killed_dir, cls.KILL_AFTER)
    cls.reference_dir = os.path.join(cls.dir, "reference")
    pt.run(cls.reference_dir, "train", pt.NO_BLOCKS,
           **{"trainer.train_steps": STEPS, "trainer.max_to_keep": 100})
    cls.reference = tf.train.latest_checkpoint(cls.reference_dir)

  @classmethod
  def _kill_after_step(cls, proc, model_dir, step):
    """SIGKILLs `proc` once its latest checkpoint is at `step` or later; the
    step of its latest checkpoint then (None if it never got there)."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
      latest = tf.train.latest_checkpoint(model_dir)
      if latest and pt.step_of(latest) >= step:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return pt.step_of(tf.train.latest_checkpoint(model_dir))
      time.sleep(0.02)
    return None

  @classmethod
  def tearDownClass(cls):
    for proc in [cls.killed] + cls.workers:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    shutil.rmtree(cls.dir, ignore_errors=True)
    super().tearDownClass()

  def _log(self, name):
    with open(os.path.join(self.dir, f"{name}.log")) as f:
      return f.read()

  def test_killed_run_restarts_from_its_checkpoint_with_no_lost_or_repeated_step(self):
    killed_at = self.killed_at
    self.assertIsNotNone(killed_at, self._log("killed")[-3000:])
    self.assertEqual(self.killed.returncode, -signal.SIGKILL)
    self.assertBetween(killed_at, self.KILL_AFTER, STEPS - 5)
    self.assertEqual(pt.step_of(self.reference), STEPS)

    # The same command again, in the killed run's model_dir (in this process:
    # the command's own code path after its flags).
    logs = os.path.join(self.killed_dir, "train")
    before = pt.event_files(logs)
    pt.run(self.killed_dir, "train", pt.NO_BLOCKS, **{"trainer.train_steps": STEPS})
    # It trained the loops after its checkpoint, each once...
    restarted = [path for path in pt.event_files(logs) if path not in before]
    self.assertEqual(pt.logged_steps(restarted), list(range(killed_at + 5, STEPS + 1, 5)))
    # ...and ends with the model, every optimizer slot (Mnemosyne's state) and
    # the step of a run that was never killed: to 1e-5, since graph-mode TF on
    # a loaded CPU can round a per-tensor scalar differently between two runs
    # (bench_quality_test), while a lost or repeated step changes the weights by a
    # whole update (RMS 1.5e-2 times the rule's per-tensor factors).
    final = tf.train.latest_checkpoint(self.killed_dir)
    self.assertEqual(pt.step_of(final), STEPS)
    self.assertLess(pt.max_difference(pt.checkpoint_values(final),
                                      pt.checkpoint_values(self.reference)), 1e-5)

  def test_two_workers_train_like_one_with_the_same_global_batch(self):
    for i, worker in enumerate(self.workers):
      self.assertEqual(worker.wait(timeout=600), 0, self._log(f"worker{i}")[-3000:])
    self.assertIn("strategy=multi_worker_mirrored replicas=2", self._log("worker0"))
    chief = tf.train.latest_checkpoint(self.worker_dirs[0])
    self.assertEqual(pt.step_of(chief), WORKER_STEPS)
    reference = os.path.join(self.reference_dir, f"ckpt-{WORKER_STEPS}")
    # Every variable (no attention here: none with an exactly zero gradient,
    # whose Mnemosyne update would be float noise of the all-reduce order).
    self.assertLess(pt.max_difference(
        pt.checkpoint_values(chief, include_optimizer=False),
        pt.checkpoint_values(reference, include_optimizer=False)), 1e-5)


if __name__ == "__main__":
  tf.test.main()
