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

  def _prepare(self, model_dir, steps):
    # Checkpoints only at the end: a checkpoint at step 10 is SIGTERM's.
    override = pt.overrides(pt.TINY, pt.ADAM, **{"trainer.train_steps": steps,
                                                 "trainer.checkpoint_interval": 1000})
    params, _, strategy, task = train.prepare(pt.EXPERIMENT, "train", model_dir,
                                              [pt.TINY_CONFIG], override)
    return params, strategy, task

  def test_sigterm_saves_the_current_step_exits_and_the_rerun_is_exact(self):
    reference_dir = self.create_tempdir().full_path
    params, strategy, task = self._prepare(reference_dir, 30)
    train.run(params, strategy, task, "train", reference_dir)

    model_dir = self.create_tempdir().full_path
    params, strategy, task = self._prepare(model_dir, 30)
    runner = preemption.PreemptibleExperimentRunner(
        distribution_strategy=strategy, task=task, mode="train", params=params,
        model_dir=model_dir)
    runner.controller.train_actions = (
        (_SigtermAtStep(runner.trainer.global_step, 10),) + runner.controller.train_actions)
    with self.assertRaises(SystemExit) as exited:
      runner.run()
    self.assertEqual(exited.exception.code, 128 + signal.SIGTERM)
    self.assertIs(signal.getsignal(signal.SIGTERM), self.previous_handler)
    self.assertEqual(pt.step_of(tf.train.latest_checkpoint(model_dir)), 10)

    params, strategy, task = self._prepare(model_dir, 30)
    train.run(params, strategy, task, "train", model_dir)
    final = tf.train.latest_checkpoint(model_dir)
    self.assertEqual(pt.step_of(final), 30)
    self.assertLess(pt.max_difference(
        pt.checkpoint_values(final),
        pt.checkpoint_values(tf.train.latest_checkpoint(reference_dir))), 1e-6)


if __name__ == "__main__":
  tf.test.main()
