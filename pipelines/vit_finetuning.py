"""ViT fine-tuning (the paper's ViT experiments) on tf-models-official.

A Vision Transformer (official's `VisionTransformer` backbone: a tiny one over
2x2 patches of 8x8 digits, or ViT-B/16, ViT-H/14, ... by `model_name`) with a
linear head, trained by official's Trainer with any optimizer of the experiment
config (Mnemosyne in any mode, Adam, AdamW). Evaluation reports the loss and the
accuracy.

Data: scikit-learn's bundled 8x8 handwritten digits (offline; a fixed 80/20
stratified split, `mnemosyne_tf.digits.load_split`), restricted to some classes,
or any TFDS image classification dataset (`tfds_name`) for real runs.

The paper fine-tunes pre-trained ViTs. Pre-training here is the same experiment
on other classes with an empty `init_checkpoint`; its checkpoints carry the
backbone under `backbone` (as official's image classification checkpoints do),
which is what fine-tuning loads:

    python -m pipelines.train --experiment=mnemosyne/vit_finetuning --mode=train \
      --config_file=configs/experiments/vit_finetuning_tiny_pretrain.yaml --model_dir=runs/vit_pre
    python -m pipelines.train --experiment=mnemosyne/vit_finetuning --mode=train_and_eval \
      --config_file=configs/experiments/vit_finetuning_tiny.yaml --model_dir=runs/vit_ft \
      --params_override=task.init_checkpoint=runs/vit_pre
"""

import dataclasses
from typing import List, Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from official.core import base_task
from official.core import config_definitions as cfg
from official.core import exp_factory
from official.core import task_factory
from official.modeling import hyperparams
from official.vision.configs import backbones
from official.vision.modeling.backbones import vit
from official.vision.modeling.backbones.vit_specs import VIT_SPECS

from mnemosyne_tf import digits
from pipelines import common
from pipelines import sources

EXPERIMENT = "mnemosyne/vit_finetuning"
DIGIT_CLASSES = 10
DIGIT_SIZE = 8


@dataclasses.dataclass
class ImageData(cfg.DataConfig):
  """Images and labels: the bundled 8x8 digits, or a TFDS image dataset.

  Attributes:
    tfds_name: a TFDS image classification dataset (features `image` and
      `label`) prepared under `tfds_data_dir`; empty: the bundled digits.
    tfds_split: the TFDS split, e.g. "train" or "train[:90%]".
    classes: digits only: the digit classes to use, in label order (digit
      classes[i] gets label i). Training data come from the 80% training part
      of the digits, validation data from the 20% test part.
    seed: shuffle seed. The training order is a function of it, so a resumed
      run sees the batches an uninterrupted run would.
  """
  classes: List[int] = dataclasses.field(default_factory=list)
  seed: int = 0


@dataclasses.dataclass
class ViTClassifierModel(hyperparams.Config):
  """A ViT classifier: official's VisionTransformer backbone and a linear head.

  Attributes:
    backbone: official's ViT backbone config. A `model_name` of official's
      VIT_SPECS ("vit-b16", "vit-h14", ...) sets the sizes, as in official's
      vision models; an empty `model_name` uses the sizes given here.
    image_size: images are resized to image_size x image_size.
    channels: image channels (1 for the digits, 3 for RGB datasets).
    num_classes: outputs of the head.
    seed: the initial weights are a function of this seed (same on every
      worker and every restart).
  """
  backbone: backbones.VisionTransformer = dataclasses.field(
      default_factory=lambda: backbones.VisionTransformer(
          model_name="", hidden_size=32, patch_size=2,
          transformer=backbones.Transformer(mlp_dim=64, num_heads=2, num_layers=2)))
  image_size: int = DIGIT_SIZE
  channels: int = 1
  num_classes: int = 5
  seed: int = 0


@dataclasses.dataclass
class ViTFineTuningTask(cfg.TaskConfig):
  """The ViT fine-tuning task.

  Attributes:
    init_checkpoint: a checkpoint file, or a directory (its latest checkpoint),
      holding the backbone under `backbone`: one written by this experiment or
      by official's image classification task. Empty: the backbone starts from
      its random initialization (pre-training). The head always starts at zero.
  """
  model: ViTClassifierModel = dataclasses.field(default_factory=ViTClassifierModel)
  train_data: ImageData = dataclasses.field(default_factory=lambda: ImageData(
      is_training=True, global_batch_size=64, classes=[5, 6, 7, 8, 9]))
  validation_data: ImageData = dataclasses.field(default_factory=lambda: ImageData(
      is_training=False, global_batch_size=128, drop_remainder=False,
      classes=[5, 6, 7, 8, 9]))


@exp_factory.register_config_factory(EXPERIMENT)
def vit_finetuning() -> common.ExperimentConfig:
  """Defaults: the tiny ViT on digits 5-9 with Mnemosyne (CPU scale)."""
  return common.ExperimentConfig(
      task=ViTFineTuningTask(),
      trainer=common.TrainerConfig(
          optimizer_config=common.optimization("mnemosyne"),
          train_steps=300, steps_per_loop=25, summary_interval=25,
          checkpoint_interval=100, validation_interval=100, validation_steps=-1,
          max_to_keep=3),
      runtime=cfg.RuntimeConfig(distribution_strategy="auto"))


def backbone_config(model: ViTClassifierModel) -> backbones.VisionTransformer:
  """The backbone config with official's VIT_SPECS sizes applied for a model_name."""
  config = model.backbone.replace()
  if config.model_name:
    config.override(dict(VIT_SPECS[config.model_name]), is_strict=True)
  return config


def check_config(config: ViTFineTuningTask) -> None:
  """Raises ValueError naming every problem of `config` (before any state is written)."""
  problems = []
  model = config.model
  name = model.backbone.model_name
  if name and name not in VIT_SPECS:
    problems.append(f"task.model.backbone.model_name {name!r} is not one of official's "
                    f"ViT specs {sorted(VIT_SPECS)} (or empty for the sizes given)")
  else:
    backbone = backbone_config(model)
    if backbone.patch_size < 1 or model.image_size % backbone.patch_size:
      problems.append(f"task.model.image_size {model.image_size} is not a multiple of the "
                      f"patch size {backbone.patch_size}")
    if backbone.hidden_size % backbone.transformer.num_heads:
      problems.append(f"hidden size {backbone.hidden_size} is not a multiple of "
                      f"{backbone.transformer.num_heads} heads")
  if model.num_classes < 1:
    problems.append(f"task.model.num_classes must be positive, got {model.num_classes}")
  for field in ("train_data", "validation_data"):
    problems += _data_problems(field, getattr(config, field), model)
  if config.init_checkpoint and sources.checkpoint_prefix(config.init_checkpoint) is None:
    problems.append(f"task.init_checkpoint {config.init_checkpoint!r}: no checkpoint there "
                    "(a checkpoint prefix with a .index file, or a directory holding one)")
  if problems:
    raise ValueError(f"invalid {EXPERIMENT} config:\n  " + "\n  ".join(problems))


def _data_problems(field: str, data: ImageData, model: ViTClassifierModel) -> List[str]:
  """What is wrong with one data config (empty list if nothing)."""
  problems = []
  if data.global_batch_size < 1:
    problems.append(f"task.{field}.global_batch_size must be positive, "
                    f"got {data.global_batch_size}")
  if data.tfds_name:
    return problems + _tfds_problems(field, data, model)
  classes = list(data.classes)
  if (not classes or len(set(classes)) != len(classes)
      or not all(0 <= c < DIGIT_CLASSES for c in classes)):
    problems.append(f"task.{field}.classes must be distinct digits 0-9, got {classes}")
  elif len(classes) != model.num_classes:
    problems.append(f"task.{field}.classes has {len(classes)} classes but "
                    f"task.model.num_classes is {model.num_classes}")
  if model.channels != 1:
    problems.append(f"the digits have 1 channel but task.model.channels is {model.channels}")
  return problems


def _tfds_problems(field: str, data: ImageData, model: ViTClassifierModel) -> List[str]:
  """Whether a TFDS dataset is prepared and fits the model."""
  try:
    builder = sources.tfds_builder(data.tfds_name, data.tfds_data_dir, ("image", "label"))
  except ValueError as e:
    return [f"task.{field}.tfds_name: {e} (or set task.{field}.tfds_data_dir)"]
  problems = []
  try:
    builder.info.splits[data.tfds_split]
  except (KeyError, ValueError) as e:
    problems.append(f"task.{field}.tfds_split {data.tfds_split!r}: {e}")
  channels = builder.info.features["image"].shape[-1]
  if channels != model.channels:
    problems.append(f"{data.tfds_name} images have {channels} channels but "
                    f"task.model.channels is {model.channels}")
  num_classes = builder.info.features["label"].num_classes
  if num_classes > model.num_classes:
    problems.append(f"{data.tfds_name} has {num_classes} classes but task.model.num_classes "
                    f"is {model.num_classes}")
  return problems


def digits_split(classes, training: bool):
  """(images [N, 8, 8, 1] in [0, 1], labels [N]) of the given digit classes.

  Digit classes[i] gets label i; `training` picks the 80% training part of
  `mnemosyne_tf.digits.load_split`, otherwise the 20% test part.
  """
  x_train, y_train, x_test, y_test = digits.load_split()
  images, labels = (x_train, y_train) if training else (x_test, y_test)
  relabel = np.full(DIGIT_CLASSES, -1, np.int32)
  relabel[list(classes)] = np.arange(len(classes), dtype=np.int32)
  keep = relabel[labels] >= 0
  return images[keep], relabel[labels[keep]]


class ViTClassifier(tf_keras.Model):
  """images [B, H, W, C] -> logits [B, num_classes]; `backbone` is checkpointed apart."""

  def __init__(self, backbone: tf_keras.Model, num_classes: int, **kwargs):
    images = tf_keras.Input(shape=backbone.input_shape[1:])  # [B, H, W, C]
    features = tf_keras.layers.Flatten()(backbone(images)["pre_logits"])  # [B, D]
    logits = tf_keras.layers.Dense(num_classes, kernel_initializer="zeros",
                                   name="head")(features)  # [B, num_classes]
    super().__init__(inputs=images, outputs=logits, **kwargs)
    self.backbone = backbone

  @property
  def checkpoint_items(self):
    """Checkpointed at the top level too, so fine-tuning can load the backbone alone."""
    return {"backbone": self.backbone}


@task_factory.register_task_cls(ViTFineTuningTask)
class ViTFineTuning(base_task.Task):
  """Classification with a ViT: cross-entropy loss, accuracy metric."""

  def __init__(self, params: ViTFineTuningTask, logging_dir: Optional[str] = None,
               name: Optional[str] = None):
    check_config(params)
    super().__init__(params, logging_dir=logging_dir, name=name)

  def build_model(self) -> ViTClassifier:
    model = self.task_config.model
    tf_keras.utils.set_random_seed(model.seed)
    config = backbone_config(model)
    backbone = vit.VisionTransformer(
        mlp_dim=config.transformer.mlp_dim,
        num_heads=config.transformer.num_heads,
        num_layers=config.transformer.num_layers,
        attention_dropout_rate=config.transformer.attention_dropout_rate,
        dropout_rate=config.transformer.dropout_rate,
        init_stochastic_depth_rate=config.init_stochastic_depth_rate,
        input_specs=tf_keras.layers.InputSpec(
            shape=[None, model.image_size, model.image_size, model.channels]),
        patch_size=config.patch_size,
        hidden_size=config.hidden_size,
        representation_size=config.representation_size,
        pooler=config.pooler,
        original_init=config.original_init,
        pos_embed_shape=config.pos_embed_shape,
        layer_scale_init_value=config.layer_scale_init_value)
    return ViTClassifier(backbone, model.num_classes)

  def initialize(self, model: ViTClassifier):
    """Loads the backbone from `init_checkpoint` (a fresh run only: orbit calls
    this when model_dir has no checkpoint of its own)."""
    if not self.task_config.init_checkpoint:
      logging.info("No init_checkpoint: the backbone starts from its random init.")
      return
    path = sources.checkpoint_prefix(self.task_config.init_checkpoint)
    status = tf.train.Checkpoint(backbone=model.backbone).read(path)
    status.expect_partial().assert_existing_objects_matched()
    logging.info("Loaded the backbone from %s.", path)

  def build_inputs(self, params: ImageData,
                   input_context: Optional[tf.distribute.InputContext] = None):
    """Per-replica batches: (images [b, S, S, C] in [0, 1], labels [b])."""
    if params.tfds_name:
      dataset = self._tfds_inputs(params, input_context)
    else:
      dataset = self._digits_inputs(params, input_context)
      size = self.task_config.model.image_size
      if size != DIGIT_SIZE:
        dataset = dataset.map(lambda x, y: (tf.image.resize(x, [size, size]), y))
    return dataset.prefetch(tf.data.AUTOTUNE)

  def _digits_inputs(self, params: ImageData, input_context):
    """Training: global batches of a seeded shuffle, each input pipeline taking
    its contiguous part, so every step sees the same global batch whatever the
    number of workers and replicas. Validation: sharded, one pass."""
    pipelines, pipeline = 1, 0
    per_replica = params.global_batch_size
    if input_context is not None:
      pipelines, pipeline = input_context.num_input_pipelines, input_context.input_pipeline_id
      per_replica = input_context.get_per_replica_batch_size(params.global_batch_size)
    images, labels = digits_split(params.classes, params.is_training)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if not params.is_training:
      return dataset.shard(pipelines, pipeline).batch(
          per_replica, drop_remainder=params.drop_remainder)
    share = params.global_batch_size // pipelines
    lo, hi = pipeline * share, (pipeline + 1) * share
    dataset = dataset.shuffle(len(images), seed=params.seed).repeat()
    dataset = dataset.batch(params.global_batch_size, drop_remainder=True)  # [G, 8, 8, 1]
    dataset = dataset.map(lambda x, y: (x[lo:hi], y[lo:hi]))  # this pipeline's part
    return dataset.unbatch().batch(per_replica, drop_remainder=True)

  def _tfds_inputs(self, params: ImageData, input_context):
    """A TFDS split, sharded over input pipelines by tfds, resized, pixels in [0, 1]."""
    import tensorflow_datasets as tfds  # only for TFDS runs: a slow import
    per_replica = params.global_batch_size
    if input_context is not None:
      per_replica = input_context.get_per_replica_batch_size(params.global_batch_size)
    builder = tfds.builder(params.tfds_name, data_dir=params.tfds_data_dir or None)
    dataset = builder.as_dataset(
        split=params.tfds_split, as_supervised=True, shuffle_files=params.is_training,
        read_config=tfds.ReadConfig(input_context=input_context, shuffle_seed=params.seed))
    size = self.task_config.model.image_size
    dataset = dataset.map(
        lambda x, y: (tf.image.resize(tf.cast(x, tf.float32) / 255.0, [size, size]), y),
        num_parallel_calls=tf.data.AUTOTUNE)
    if params.is_training:
      dataset = dataset.shuffle(params.shuffle_buffer_size, seed=params.seed).repeat()
    return dataset.batch(per_replica,
                         drop_remainder=params.is_training or params.drop_remainder)

  def build_losses(self, labels, model_outputs, aux_losses=None) -> tf.Tensor:
    """Mean cross-entropy of logits [b, K] against labels [b], plus aux losses;
    in float32 whatever the compute dtype (bfloat16 logits on TPU)."""
    loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(
        labels, tf.cast(model_outputs, tf.float32), from_logits=True))
    if aux_losses:
      loss += tf.add_n(aux_losses)
    return loss

  def build_metrics(self, training: bool = True):
    del training
    return [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
