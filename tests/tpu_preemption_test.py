"""Tests of tpu.preemption: the resumed input, and SIGTERM saving the current step."""

import os
import signal

import tensorflow as tf

from pipelines import train
from tests import pipeline_testing as pt
from tpu import preemption


class SkipConsumedTest(tf.test.TestCase):

  def test_skips_one_batch_per_replica_of_this_pipeline(self):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=6)
    build = lambda params, input_context: tf.data.Dataset.range(100)
    dataset = preemption.skip_consumed(build, 4, None, context)
    # 4 steps x (6 replicas / 2 pipelines) batches of this pipeline are consumed.
    self.assertEqual(next(iter(dataset)).numpy(), 12)


class _SigtermAtStep:
  """A train action that sends this process SIGTERM once the step reaches `step`."""

  def __init__(self, global_step, step):
    self._global_step, self._step, self._sent = global_step, step, False

  def __call__(self, output):
    del output
    if not self._sent and int(self._global_step.numpy()) >= self._step:
      self._sent = True
      os.kill(os.getpid(), signal.SIGTERM)


class SigtermTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.previous_handler = signal.getsignal(signal.SIGTERM)
    self.addCleanup(signal.signal, signal.SIGTERM, self.previous_handler)

  def test_sigterm_saves_the_current_step_and_exits(self):
    # Periodic checkpoints after the first loop (step 5) and then every 1000
    # steps: a checkpoint at step 10 is SIGTERM's. (That a run resumes exactly
    # from any checkpoint is pipelines_train_test's.)
    model_dir = self.create_tempdir().full_path
    override = pt.overrides(pt.NO_BLOCKS, pt.ADAM, **{"trainer.train_steps": 30,
                                                      "trainer.checkpoint_interval": 1000})
    params, _, strategy, task = train.prepare(pt.EXPERIMENT, "train", model_dir,
                                              [pt.TINY_CONFIG], override)
    runner = preemption.PreemptibleExperimentRunner(
        distribution_strategy=strategy, task=task, mode="train", params=params,
        model_dir=model_dir)
    runner.controller.train_actions = (
        (_SigtermAtStep(runner.trainer.global_step, 10),) + runner.controller.train_actions)
    with self.assertRaises(SystemExit) as exited:
      runner.run()
    self.assertEqual(exited.exception.code, 128 + signal.SIGTERM)
    self.assertIs(signal.getsignal(signal.SIGTERM), self.previous_handler)
    self.assertEqual(int(runner.trainer.global_step.numpy()), 10)
    self.assertEqual(tf.train.get_checkpoint_state(model_dir).all_model_checkpoint_paths,
                     [os.path.join(model_dir, f"ckpt-{step}") for step in (5, 10)])
    self.assertEqual(pt.step_of(os.path.join(model_dir, "ckpt-10")), 10)


if __name__ == "__main__":
  tf.test.main()
