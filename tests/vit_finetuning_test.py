"""Tests of the ViT fine-tuning experiment: data, checkpoint loading, end to
end with Mnemosyne, and the same run under MirroredStrategy."""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tests import testing

testing.use_logical_cpus(2)

from mnemosyne_tf import digits  # noqa: E402
from pipelines import figures  # noqa: E402
from pipelines import train  # noqa: E402
from pipelines import vit_finetuning as vit  # noqa: E402
from tests import pipeline_testing as pt  # noqa: E402

# The pre-training run: Adam on digits 0-4, every checkpoint kept.
PRETRAINING = dict(pt.TINY, **pt.ADAM, **{
    "task.train_data.classes": "[0,1,2,3,4]", "task.validation_data.classes": "[0,1,2,3,4]",
    "task.model.seed": 1, "trainer.train_steps": 60, "trainer.max_to_keep": 100})


class DataTest(tf.test.TestCase):

  def test_digits_split_keeps_and_relabels_the_chosen_classes(self):
    x_train, y_train, _, _ = digits.load_split()
    images, labels = vit.digits_split([7, 2, 9], training=True)
    expected = [(x, [7, 2, 9].index(y)) for x, y in zip(x_train, y_train) if y in (7, 2, 9)]
    self.assertAllEqual(labels, [label for _, label in expected])
    self.assertAllEqual(images, np.stack([x for x, _ in expected]))

  def test_every_step_sees_the_same_global_batch_whatever_the_pipelines(self):
    task = vit.ViTFineTuning(vit.ViTFineTuningTask())
    data = task.task_config.train_data  # global batch 64

    def batches(context, count):
      return [(x.numpy(), y.numpy()) for x, y in
              task.build_inputs(data, context).take(count)]

    single = batches(None, 3)
    two_workers = [batches(tf.distribute.InputContext(2, i, 2), 3) for i in range(2)]
    one_worker_two_replicas = batches(tf.distribute.InputContext(1, 0, 2), 6)
    for step in range(3):
      x, y = single[step]
      self.assertEqual(x.shape, (64, 8, 8, 1))
      self.assertAllEqual(np.concatenate([two_workers[i][step][1] for i in range(2)]), y)
      self.assertAllEqual(np.concatenate([two_workers[i][step][0] for i in range(2)]), x)
      self.assertAllEqual(np.concatenate([one_worker_two_replicas[2 * step + r][1]
                                          for r in range(2)]), y)
    self.assertNotAllEqual(single[0][1], single[1][1])

  def test_validation_is_each_test_image_once_over_the_pipelines(self):
    task = vit.ViTFineTuning(vit.ViTFineTuningTask())
    data = task.task_config.validation_data
    labels = np.concatenate([y.numpy() for i in range(2) for _, y in
                             task.build_inputs(data, tf.distribute.InputContext(2, i, 2))])
    _, _, _, y_test = digits.load_split()
    self.assertAllEqual(np.sort(labels), np.sort(y_test[y_test >= 5] - 5))

  def test_unprepared_tfds_dataset_is_refused(self):
    config = vit.ViTFineTuningTask()
    config.train_data.tfds_name = "mnist"
    config.train_data.tfds_data_dir = self.create_tempdir().full_path
    with self.assertRaisesRegex(ValueError, "'mnist' is not prepared"):
      vit.check_config(config)


class TrainingTest(tf.test.TestCase):
  """A pre-training run (Adam, digits 0-4, on one device) whose backbone the
  other runs load."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.pretrained = os.path.join(cls.dir, "pretrain")
    cls.pretraining_strategy, _ = pt.run(cls.pretrained, "train", PRETRAINING)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.dir, ignore_errors=True)
    super().tearDownClass()

  def test_initialize_loads_the_backbone_and_leaves_the_head_at_zero(self):
    config = train.parse_config(pt.EXPERIMENT, [pt.TINY_CONFIG], pt.overrides(
        pt.TINY, **{"task.init_checkpoint": self.pretrained})).task
    task = vit.ViTFineTuning(config)
    model = task.build_model()
    task.initialize(model)
    written = os.path.join(self.create_tempdir().full_path, "backbone")
    tf.train.Checkpoint(backbone=model.backbone).write(written)
    loaded = pt.checkpoint_values(written)
    pretrained = pt.checkpoint_values(tf.train.latest_checkpoint(self.pretrained))
    self.assertNotEmpty(loaded)
    for name, value in loaded.items():
      self.assertAllEqual(value, pretrained[name], msg=name)
    self.assertAllEqual(model.get_layer("head").kernel, np.zeros([16, 5]))

  def test_fine_tuning_with_mnemosyne_lowers_the_loss_and_reports_eval_metrics(self):
    model_dir = os.path.join(self.dir, "finetune")
    pt.run(model_dir, "train_and_eval", pt.TINY, **{
        "task.init_checkpoint": self.pretrained, "trainer.train_steps": 40,
        "trainer.validation_interval": 40})
    losses = [loss for _, loss in figures.read_scalars(os.path.join(model_dir, "train"))
              ["training_loss"]]
    self.assertLen(losses, 8)
    self.assertLess(np.mean(losses[-2:]), 0.8 * losses[0])
    validation = figures.read_scalars(os.path.join(model_dir, "validation"))
    self.assertEqual([step for step, _ in validation["accuracy"]], [40])
    self.assertGreater(validation["accuracy"][0][1], 0.4)  # chance: 0.2
    self.assertTrue(np.isfinite(validation["validation_loss"][0][1]))

    # --mode=eval evaluates the latest checkpoint again and writes no checkpoint.
    checkpoints = sorted(os.listdir(model_dir))
    pt.run(model_dir, "eval", pt.TINY, **{"task.init_checkpoint": self.pretrained})
    self.assertEqual(sorted(os.listdir(model_dir)), checkpoints)
    again = figures.read_scalars(os.path.join(model_dir, "validation"))["accuracy"]
    self.assertEqual(again[-1], validation["accuracy"][0])

  def test_mirrored_on_two_logical_cpus_trains_like_one_device(self):
    if testing.use_logical_cpus(2) < 2:
      self.skipTest("needs two logical CPUs")
    # The first 20 steps of the pre-training, again under MirroredStrategy.
    model_dir = os.path.join(self.dir, "mirrored")
    name, _ = pt.run(model_dir, "train", PRETRAINING, **{
        "trainer.train_steps": 20, "runtime.distribution_strategy": "mirrored"})
    self.assertEqual((self.pretraining_strategy, name), ("default", "mirrored"))
    mirrored = pt.checkpoint_values(tf.train.latest_checkpoint(model_dir))
    one_device = pt.checkpoint_values(os.path.join(self.pretrained, "ckpt-20"))
    self.assertEqual(pt.step_of(os.path.join(self.pretrained, "ckpt-20")), 20)
    # Adam moves each weight by about 3e-3 a step; the sums differ in order only.
    self.assertLess(pt.max_difference(one_device, mirrored), 1e-4)


if __name__ == "__main__":
  tf.test.main()
