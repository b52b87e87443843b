"""Tests of the pipelines.train driver: bad runs fail at start, a killed run
resumes exactly, two workers train as one (MultiWorkerMirroredStrategy)."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from absl.testing import parameterized
import tensorflow as tf

from pipelines import train
from tests import pipeline_testing as pt

STEPS = 40  # the tiny runs' length; checkpoints every 5 steps


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
    out = subprocess.run(pt.train_argv(model_dir, "task.model.num_classes=3"), cwd=pt.ROOT,
                         env=dict(os.environ, PYTHONPATH=pt.ROOT), capture_output=True,
                         text=True, check=False)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn("pipelines.train: error: invalid mnemosyne/vit_finetuning config", out.stderr)
    self.assertIn("task.model.num_classes is 3", out.stderr)
    self.assertFalse(os.path.exists(model_dir))


class SubprocessRunsTest(tf.test.TestCase):
  """Real runs of the command, Mnemosyne on the tiny ViT, started together: a
  single-worker run that is SIGKILLed after it saved step STEPS (the reference),
  and two MultiWorkerMirroredStrategy workers on 127.0.0.1."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.reference_dir = os.path.join(cls.dir, "reference")
    cls.reference = pt.start(
        pt.train_argv(cls.reference_dir, pt.overrides(
            pt.TINY, **{"trainer.train_steps": 10**6, "trainer.max_to_keep": 1000})),
        os.path.join(cls.dir, "reference.log"))
    ports = [pt.free_port(), pt.free_port()]
    cls.worker_dirs = [os.path.join(cls.dir, f"worker{i}") for i in range(2)]
    cls.workers = [
        pt.start(pt.train_argv(cls.worker_dirs[i],
                               pt.overrides(pt.TINY, **{"trainer.train_steps": STEPS})),
                 os.path.join(cls.dir, f"worker{i}.log"),
                 tf_config=json.dumps({
                     "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": i}}))
        for i in range(2)]
    cls.killed_at = cls._kill_after_step(cls.reference, cls.reference_dir, STEPS)

  @classmethod
  def _kill_after_step(cls, proc, model_dir, step):
    """SIGKILLs `proc` once its latest checkpoint is at `step` or later; that step."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
      latest = tf.train.latest_checkpoint(model_dir)
      if latest and pt.step_of(latest) >= step:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return pt.step_of(tf.train.latest_checkpoint(model_dir))
      time.sleep(0.05)
    return None

  @classmethod
  def tearDownClass(cls):
    for proc in [cls.reference] + cls.workers:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    shutil.rmtree(cls.dir, ignore_errors=True)
    super().tearDownClass()

  def _log(self, name):
    with open(os.path.join(self.dir, f"{name}.log")) as f:
      return f.read()

  def _reference(self, step):
    self.assertIsNotNone(self.killed_at, self._log("reference")[-3000:])
    self.assertEqual(self.reference.returncode, -signal.SIGKILL)
    return os.path.join(self.reference_dir, f"ckpt-{step}")

  def test_killed_run_restarts_from_its_checkpoint_with_no_lost_or_repeated_step(self):
    # What a SIGKILL right after step 20 leaves: the reference's files up to ckpt-20.
    reference = self._reference(STEPS)
    restarted = os.path.join(self.dir, "restarted")
    os.makedirs(restarted)
    for name in os.listdir(self.reference_dir):
      if name.startswith("ckpt-20.") or name == "params.yaml":
        shutil.copy(os.path.join(self.reference_dir, name), restarted)
    tf.compat.v1.train.update_checkpoint_state(restarted, os.path.join(restarted, "ckpt-20"))

    proc = pt.start(pt.train_argv(restarted, pt.overrides(pt.TINY, **{"trainer.train_steps": STEPS})),
                    os.path.join(self.dir, "restarted.log"))
    self.assertEqual(proc.wait(timeout=600), 0, self._log("restarted")[-3000:])
    log = self._log("restarted")
    self.assertIn(f"restored from checkpoint: {restarted}/ckpt-20", log)
    self.assertIn("Resuming at step 20", log)
    trained = {int(step) for step in re.findall(r"train \| step:\s+(\d+) \| steps/sec", log)}
    self.assertEqual(trained, {25, 30, 35, 40})  # only the loops after step 20
    final = tf.train.latest_checkpoint(restarted)
    self.assertEqual(pt.step_of(final), STEPS)
    # Model, every optimizer slot (Mnemosyne's state) and the step: as if never killed.
    self.assertLess(pt.max_difference(pt.checkpoint_values(final),
                                      pt.checkpoint_values(reference)), 1e-6)

  def test_two_workers_train_like_one_with_the_same_global_batch(self):
    reference = self._reference(STEPS)
    for i, worker in enumerate(self.workers):
      self.assertEqual(worker.wait(timeout=600), 0, self._log(f"worker{i}")[-3000:])
    self.assertIn("strategy=multi_worker_mirrored replicas=2", self._log("worker0"))
    chief = tf.train.latest_checkpoint(self.worker_dirs[0])
    self.assertEqual(pt.step_of(chief), STEPS)
    # The attention key bias has an exactly zero gradient (softmax ignores a
    # shift shared by all keys): its Mnemosyne update is normalized float
    # noise, which differs with the order of the all-reduce sum.
    def compared(path):
      return {name: value for name, value in
              pt.checkpoint_values(path, include_optimizer=False).items()
              if "_key_dense/bias" not in name}
    self.assertLess(pt.max_difference(compared(chief), compared(reference)), 1e-5)


if __name__ == "__main__":
  tf.test.main()
