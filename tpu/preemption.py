"""Preemption-safe training: a killed run restarts exactly where it stopped.

official's trainer saves model, optimizer (every slot, Mnemosyne's state too) and
the global step every `trainer.checkpoint_interval` steps, and orbit's Controller
restores the latest checkpoint when a run starts. Two pieces make the restart
exact:

* `ResumableTrainer`: the training input continues at the restored step. orbit
  makes the training iterator on the first training loop, after the restore;
  just before that, the trainer rebuilds the input so that it skips the batches
  the restored steps consumed. With a deterministic input pipeline (fixed
  shuffle seed) the resumed run sees the same batches as an uninterrupted one:
  no step is lost or repeated.
* `SaveAndExitOnSigterm`: a preempted VM gets SIGTERM before it is stopped.
  While a single-host run trains (in the main thread), after the current
  training loop (`trainer.steps_per_loop` steps) the action saves a checkpoint
  at the current step and exits with status 143 (128 + SIGTERM). Runs whose
  strategy has a cluster resolver (TPU, multi-worker) never get it: their save
  is collective, and a signal reaches one worker, so they rely on official's
  on-demand preemption checkpoint (`trainer.preemption_on_demand_checkpoint`,
  on by default) and on the periodic checkpoints.

Resuming replays the input pipeline over the skipped batches (`Dataset.skip`
reads and decodes them), which takes time proportional to the restored step;
cheap for the tiny runs, noticeable for a paper-scale run resumed late.

`PreemptibleExperimentRunner` is official's OrbitExperimentRunner with both.
"""

import functools
import signal
import threading

from absl import logging
import orbit
import tensorflow as tf

from official.core import base_trainer
from official.core import train_lib
from official.core import train_utils

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


def skip_consumed(build_inputs, steps: int, params, input_context=None) -> tf.data.Dataset:
  """`build_inputs(params, input_context)` without the batches of `steps` steps.

  Each input pipeline yields per-replica batches, and one step takes one batch
  per replica it feeds: num_replicas_in_sync / num_input_pipelines of them.
  """
  dataset = build_inputs(params, input_context)
  per_step = input_context.num_replicas_in_sync // input_context.num_input_pipelines
  return dataset.skip(steps * per_step)


class ResumableTrainer(base_trainer.Trainer):
  """official's Trainer whose training input resumes at the restored step."""

  def train_loop_begin(self):
    """Before orbit makes the training iterator: skip what restored steps consumed."""
    if self._train_iter is None:
      step = int(self.global_step.numpy())
      if step > 0:
        logging.info("Resuming at step %d: the training input skips the batches "
                     "of the first %d steps.", step, step)
        self._train_dataset = self.distribute_dataset(
            functools.partial(skip_consumed, self.task.build_inputs, step),
            self.config.task.train_data)
    super().train_loop_begin()


class SaveAndExitOnSigterm:
  """A train action: after SIGTERM, checkpoint at the current step and exit.

  The signal handler only records the request; the checkpoint is written
  between training loops, where model and optimizer state are consistent.
  """

  def __init__(self, checkpoint_manager: tf.train.CheckpointManager,
               global_step: tf.Variable):
    self._checkpoint_manager = checkpoint_manager
    self._global_step = global_step
    self._requested = False
    self._previous = signal.signal(signal.SIGTERM, self._request)

  def uninstall(self) -> None:
    """Gives SIGTERM back its previous handler (training is over)."""
    signal.signal(signal.SIGTERM, self._previous)

  def _request(self, signum, frame):
    del signum, frame
    self._requested = True

  def __call__(self, output: orbit.runner.Output) -> None:
    del output
    if not self._requested:
      return
    path = self._checkpoint_manager.save(checkpoint_number=self._global_step,
                                         check_interval=False)
    logging.warning("SIGTERM: saved %s at step %d; exiting with status %d.",
                    path, int(self._global_step.numpy()), SIGTERM_EXIT_CODE)
    raise SystemExit(SIGTERM_EXIT_CODE)


class PreemptibleExperimentRunner(train_lib.OrbitExperimentRunner):
  """official's experiment runner with `ResumableTrainer` and SIGTERM handling."""

  def _build_trainer(self, task, train: bool, evaluate: bool) -> base_trainer.Trainer:
    with self.strategy.scope():
      return train_utils.create_trainer(
          self.params, task, train=train, evaluate=evaluate,
          checkpoint_exporter=self._build_best_checkpoint_exporter(),
          trainer_cls=ResumableTrainer)

  def _build_controller(self, trainer, evaluator, train_actions=None, **kwargs):
    """official's controller; a single-host training run (no cluster resolver)
    started from the main thread also saves and exits on SIGTERM."""
    train_actions = list(train_actions or [])
    self._on_sigterm = None
    if (trainer is not None and not self.strategy.cluster_resolver
        and threading.current_thread() is threading.main_thread()):
      self._on_sigterm = SaveAndExitOnSigterm(self.checkpoint_manager, trainer.global_step)
      train_actions.append(self._on_sigterm)
    return super()._build_controller(trainer, evaluator, train_actions=train_actions,
                                     **kwargs)

  def run(self):
    """official's run; SIGTERM gets its previous handler back afterwards."""
    try:
      return super().run()
    finally:
      if self._on_sigterm is not None:
        self._on_sigterm.uninstall()
