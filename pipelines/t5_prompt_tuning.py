"""Experiment `mnemosyne/t5_prompt_tuning`: soft prompt-tuning of a frozen T5.

Official's `T5Transformer` (`official.nlp.modeling.models.t5`) is loaded from a
checkpoint and frozen; the only trainable variable is a soft prompt P of
`prompt.length` x d_model, fed to the encoder next to the embedded input
tokens (Lester et al. 2021; the paper trains T5-XXL prompts with
coordinate-wise Mnemosyne, arXiv 2302.01128). Loss: token cross-entropy of the
teacher-forced decoder over the target tokens; evaluation adds token accuracy
and sequence accuracy (every target token right).

Where the prompt sits. P enters as official's `encoder_dense_inputs`: the
encoder sees [embed(tokens); P], and official gives dense inputs no relative
position bias. T5 has no absolute positions and no position bias in
cross-attention, so the decoder's output is unchanged by moving P to the front:
this is exactly prepending P to the encoder input with position-free prompt
tokens (tests check the equality).

Data. `train_data` / `validation_data` read TFRecords of tf.Examples with string
features (`input_feature`, `target_feature`), or a TFDS dataset (`tfds_name`;
an integer target is mapped through `label_names`); texts become ids with the
frozen model's SentencePiece model through `tensorflow_text`, truncated to
`input_length` / `target_length` with EOS. With both paths empty, `offline`
prepares a word-level task on a corpus (`pipelines.text_data`; the default: the
Python reference manual, reverse the order of 4 words).

The frozen model. `frozen_model.checkpoint` (a file prefix or directory written
as `tf.train.Checkpoint(**T5Transformer.checkpoint_items)`, official's layout)
and `frozen_model.sentencepiece_model`; or, with both empty, a demo model
pre-trained once on `offline.pretrain_tasks` (the task name as a text prefix,
"reverse_words: a b c d" -> "d c b a") with Adam, cached with its record in
`<offline.output_dir>`. Prompt-tuning then has to find, without the prefix, a
prompt that selects the task.
"""

import dataclasses
import functools
import hashlib
import os
import time
from typing import List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from official.core import base_task
from official.core import config_definitions as cfg
from official.core import exp_factory
from official.core import input_reader
from official.core import task_factory
from official.modeling import hyperparams
from official.nlp.modeling.models import t5

from pipelines import common
from pipelines import sources
from pipelines import text_data

EXPERIMENT = "mnemosyne/t5_prompt_tuning"
OFFLINE_SUBDIR = "offline_t5"
PAD_ID, EOS_ID = text_data.T5_PAD_ID, text_data.T5_EOS_ID
PROMPT_INITS = ("vocab", "uniform")


@dataclasses.dataclass
class T5ModelConfig(hyperparams.Config):
  """The frozen model: fields of official's `T5TransformerParams` (defaults: a
  tiny CPU model; T5 1.1 XXL in configs/experiments/t5_xxl_prompt_tuning.yaml)."""
  num_layers: int = 2
  num_decoder_layers: Optional[int] = None
  d_model: int = 32
  d_kv: int = 8
  num_heads: int = 4
  d_ff: int = 64
  vocab_size: int = 512
  ffn_activations: List[str] = dataclasses.field(default_factory=lambda: ["relu"])
  shared_embedding: bool = True
  logits_via_embedding: bool = True
  dropout_rate: float = 0.0
  layer_norm_epsilon: float = 1e-6
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128

  def transformer_params(self) -> t5.T5TransformerParams:
    fields = self.as_dict()
    fields["ffn_activations"] = tuple(fields["ffn_activations"])
    return t5.T5TransformerParams(**fields)


@dataclasses.dataclass
class SoftPromptConfig(hyperparams.Config):
  """The trainable prompt [length, d_model].

  Attributes:
    length: prompt tokens.
    init: "vocab": the frozen input embeddings of `length` token ids drawn
      uniformly from [3, min(init_vocab_limit, vocab_size)) (Lester et al.'s
      sampled-vocabulary initialization); "uniform": U(-init_scale, init_scale).
    init_vocab_limit: see `init`.
    init_scale: see `init`.
    seed: seed of the initialization.
  """
  length: int = 4
  init: str = "vocab"
  init_vocab_limit: int = 5000
  init_scale: float = 0.5
  seed: int = 0


@dataclasses.dataclass
class FrozenModelConfig(hyperparams.Config):
  """A pre-trained T5: both paths, or neither (then `offline` pre-trains one)."""
  checkpoint: str = ""
  sentencepiece_model: str = ""


@dataclasses.dataclass
class OfflineConfig(hyperparams.Config):
  """Offline text: the task's data when no input is given, and the demo frozen
  model when no checkpoint is given.

  Attributes:
    corpus: a corpus spec of `pipelines.text_data.load_corpus`, or "" for none.
    task: the prompt-tuning task (`text_data.TEXT_TO_TEXT_TASKS`).
    words: words per example.
    validation_fraction: share of documents held out for validation.
    seed: seed of the document split, the pre-training init and batches.
    output_dir: where prepared files go; "" = `<model_dir>/offline_t5`.
    tfds_data_dir: TFDS data directory for a "tfds:" corpus ("" = TFDS default).
    pretrain_tasks: the demo model's tasks, each announced by "<task>: ".
    pretrain_steps, pretrain_batch_size, pretrain_learning_rate: its Adam run.
  """
  corpus: str = ""
  task: str = "reverse_words"
  words: int = 4
  validation_fraction: float = 0.1
  seed: int = 0
  output_dir: str = ""
  tfds_data_dir: str = ""
  pretrain_tasks: List[str] = dataclasses.field(
      default_factory=lambda: ["copy", "reverse_words"])
  pretrain_steps: int = 300
  pretrain_batch_size: int = 64
  pretrain_learning_rate: float = 3e-3


@dataclasses.dataclass
class TextToTextDataConfig(cfg.DataConfig):
  """official's DataConfig plus the text-to-text fields."""
  input_feature: str = "inputs"
  target_feature: str = "targets"
  label_names: List[str] = dataclasses.field(default_factory=list)
  input_length: int = 16
  target_length: int = 16


@dataclasses.dataclass
class T5PromptTuningConfig(cfg.TaskConfig):
  model: T5ModelConfig = dataclasses.field(default_factory=T5ModelConfig)
  prompt: SoftPromptConfig = dataclasses.field(default_factory=SoftPromptConfig)
  frozen_model: FrozenModelConfig = dataclasses.field(default_factory=FrozenModelConfig)
  offline: OfflineConfig = dataclasses.field(default_factory=OfflineConfig)
  train_data: TextToTextDataConfig = dataclasses.field(
      default_factory=lambda: TextToTextDataConfig(is_training=True))
  validation_data: TextToTextDataConfig = dataclasses.field(
      default_factory=lambda: TextToTextDataConfig(is_training=False,
                                                   drop_remainder=False))


# ---------------------------------------------------------------- model
def build_transformer(config: T5ModelConfig) -> t5.T5Transformer:
  """official's T5Transformer (variables created on construction)."""
  return t5.T5Transformer(config.transformer_params(), name="t5")


def _no_checkpoint(path: str) -> str:
  return (f"no T5 checkpoint at {path!r} (a checkpoint prefix or a directory with "
          "a 'checkpoint' file)")


def restore_frozen(transformer: t5.T5Transformer, path: str) -> None:
  """Loads every variable of `transformer` from the checkpoint at `path` (a
  prefix, or a directory: its latest checkpoint).

  Raises:
    ValueError: no checkpoint there, or a variable is missing there or has
      another shape.
  """
  prefix = sources.checkpoint_prefix(path)
  if prefix is None:
    raise ValueError(_no_checkpoint(path))
  try:
    status = tf.train.Checkpoint(**transformer.checkpoint_items).read(prefix)
    status.expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ValueError(f"T5 checkpoint {prefix!r} does not fit task.model: {e}") from e


class _Untracked:
  """Holds an object outside Keras's variable and checkpoint tracking."""

  def __init__(self, value):
    self.value = value


class SoftPromptT5(tf_keras.Model):
  """A frozen T5Transformer and a trainable soft prompt.

  The model's only variable is the prompt: `trainable_variables` is [prompt]
  and the trainer's checkpoints hold only it (the frozen weights are loaded
  from their own checkpoint by `T5PromptTuningTask.build_model`).
  """

  def __init__(self, transformer: t5.T5Transformer, prompt_init: np.ndarray, **kwargs):
    super().__init__(**kwargs)
    self._frozen = _Untracked(transformer)
    self.prompt = self.add_weight(
        name="soft_prompt", shape=prompt_init.shape, dtype=tf.float32,
        initializer=tf_keras.initializers.Constant(prompt_init), trainable=True)

  @property
  def transformer(self) -> t5.T5Transformer:
    return self._frozen.value

  def call(self, inputs, training=False):
    """inputs: encoder_input_tokens [B, Li], decoder_input_tokens [B, Lt],
    decoder_target_tokens [B, Lt]; returns logits [B, Lt, V]."""
    batch = tf.shape(inputs["encoder_input_tokens"])[0]
    prompt = tf.broadcast_to(self.prompt[None], [batch, *self.prompt.shape])  # [B, n, d]
    return self.transformer(
        encoder_input_tokens=inputs["encoder_input_tokens"],
        encoder_dense_inputs=tf.cast(prompt, self.transformer.compute_dtype),
        decoder_input_tokens=inputs["decoder_input_tokens"],
        decoder_target_tokens=inputs["decoder_target_tokens"],
        training=training)["logits"]


def initial_prompt(transformer: t5.T5Transformer, config: SoftPromptConfig) -> np.ndarray:
  """The prompt's initial value [length, d_model] (`SoftPromptConfig.init`)."""
  rng = np.random.RandomState(config.seed)
  d_model = transformer.config.d_model
  if config.init == "uniform":
    return rng.uniform(-config.init_scale, config.init_scale,
                       (config.length, d_model)).astype(np.float32)
  high = min(config.init_vocab_limit, transformer.config.vocab_size)
  ids = rng.randint(3, high, size=config.length)
  embeddings = transformer.encoder.input_embed.embeddings  # [V, d]
  return tf.gather(tf.convert_to_tensor(embeddings), ids).numpy()


# ---------------------------------------------------------------- data
def encode_texts(tokenizer, texts: tf.Tensor, length: int) -> tf.Tensor:
  """SentencePiece ids of `texts` [N] truncated to length - 1, then EOS, padded
  with PAD to [N, length]."""
  pieces = tokenizer.tokenize(texts)[:, :length - 1]  # [N, (<= length-1)]
  eos = tf.RaggedTensor.from_tensor(tf.fill([pieces.nrows(), 1], EOS_ID))
  ids = tf.concat([tf.cast(pieces, tf.int32), eos], axis=1)
  return ids.to_tensor(default_value=PAD_ID, shape=[None, length])


def shift_right(targets: tf.Tensor) -> tf.Tensor:
  """T5's decoder inputs: targets [..., L] shifted right behind a PAD start."""
  return tf.concat([tf.zeros_like(targets[..., :1]), targets[..., :-1]], axis=-1)


def model_inputs(inputs: tf.Tensor, targets: tf.Tensor) -> dict:
  """The model's input dict from encoded inputs [.., Li] and targets [.., Lt]."""
  return {"encoder_input_tokens": inputs, "decoder_target_tokens": targets,
          "decoder_input_tokens": shift_right(targets)}


def sequence_loss(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Mean token cross-entropy over the non-PAD targets [B, L] of logits [B, L, V]."""
  weights = tf.cast(targets != PAD_ID, tf.float32)
  losses = tf_keras.losses.sparse_categorical_crossentropy(
      targets, tf.cast(logits, tf.float32), from_logits=True)  # [B, L]
  return tf.math.divide_no_nan(tf.reduce_sum(losses * weights), tf.reduce_sum(weights))


def _fitting_pairs(pairs, tokenizer, input_length: int, target_length: int):
  """The pairs whose inputs and targets fit their lengths with EOS (no truncation)."""
  lengths = [tokenizer.tokenize(tf.constant([p[i] for p in pairs], tf.string))
             .row_lengths().numpy() for i in (0, 1)]
  return [p for p, a, b in zip(pairs, *lengths)
          if a < input_length and b < target_length]


def _nonempty(pairs, what: str):
  """`pairs`, or ValueError saying that none of `what` fits."""
  if not pairs:
    raise ValueError(f"{EXPERIMENT}: no {what} example fits input_length/target_length "
                     "(raise them or lower task.offline.words)")
  return pairs


def parse_example(tokenizer, params: TextToTextDataConfig, example: dict) -> dict:
  """One example's strings (an integer target through `label_names`) ->
  `model_inputs` ids ([Li], [Lt])."""
  target = example[params.target_feature]
  if params.label_names:
    target = tf.gather(tf.constant(list(params.label_names)), target)
  encode = lambda text, length: encode_texts(tokenizer, tf.reshape(text, [1]), length)[0]
  return model_inputs(encode(example[params.input_feature], params.input_length),
                      encode(target, params.target_length))


# ---------------------------------------------------------------- offline preparation
def _pretrain(config: T5PromptTuningConfig, tokenizer, train_pairs, eval_pairs):
  """The demo frozen model: a T5Transformer trained on the prefixed task mixture
  with Adam; returns (transformer, record of the run).

  Runs under the current distribution strategy (tasks are made in its scope):
  every replica sees the whole batch and the loss is divided by the number of
  replicas, so the summed gradient is the single-device one."""
  offline, data = config.offline, config.train_data
  encode = lambda pairs, i, n: encode_texts(tokenizer, tf.constant([p[i] for p in pairs]), n)
  train = model_inputs(encode(train_pairs, 0, data.input_length),
                       encode(train_pairs, 1, data.target_length))
  evaluation = model_inputs(encode(eval_pairs, 0, data.input_length),
                            encode(eval_pairs, 1, data.target_length))
  tf_keras.utils.set_random_seed(offline.seed)
  transformer = build_transformer(config.model)
  variables = transformer.trainable_variables
  optimizer = tf_keras.optimizers.Adam(offline.pretrain_learning_rate)

  strategy = tf.distribute.get_strategy()

  def replica_step(batch):
    with tf.GradientTape() as tape:
      logits = transformer(**batch, training=True)["logits"]
      loss = sequence_loss(batch["decoder_target_tokens"], logits)
      scaled = loss / strategy.num_replicas_in_sync
    gradients = tape.gradient(scaled, variables)
    optimizer.apply_gradients(zip(gradients, variables))
    return loss

  @tf.function
  def step(batch):
    return strategy.reduce("MEAN", strategy.run(replica_step, (batch,)), axis=None)

  rng = np.random.RandomState(offline.seed)
  count = int(train["encoder_input_tokens"].shape[0])
  start, losses = time.time(), []
  for _ in range(offline.pretrain_steps):
    index = rng.randint(0, count, offline.pretrain_batch_size)
    losses.append(float(step({k: tf.gather(v, index) for k, v in train.items()})))
  record = {"steps": offline.pretrain_steps, "seconds": round(time.time() - start, 1),
            "train_loss_first_last": ([losses[0], float(np.mean(losses[-10:]))]
                                      if losses else []),
            "eval_examples": len(eval_pairs)}
  record.update(_evaluate_frozen(transformer, evaluation))
  return transformer, record


def _evaluate_frozen(transformer: t5.T5Transformer, evaluation: dict,
                     batch_size: int = 256) -> dict:
  """Token cross-entropy and token accuracy of `transformer` over the
  `model_inputs` arrays `evaluation` (teacher forcing, no dropout)."""
  sums = np.zeros(3)  # cross-entropy, right tokens, tokens
  count = int(evaluation["encoder_input_tokens"].shape[0])
  for first in range(0, count, batch_size):
    batch = {k: v[first:first + batch_size] for k, v in evaluation.items()}
    logits = transformer(**batch, training=False)["logits"]  # [B, Lt, V]
    targets = batch["decoder_target_tokens"]  # [B, Lt]
    weights = tf.cast(targets != PAD_ID, tf.float32)
    tokens = tf.reduce_sum(weights)
    hits = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == targets, tf.float32)
    sums += [float(sequence_loss(targets, logits) * tokens),
             float(tf.reduce_sum(hits * weights)), float(tokens)]
  return {"eval_loss": sums[0] / sums[2], "eval_token_accuracy": sums[1] / sums[2]}


def _offline_metadata(config: T5PromptTuningConfig, fingerprint: str) -> dict:
  """What the prepared offline files are a function of."""
  given = config.frozen_model.sentencepiece_model
  return {"format": "mnemosyne_tf.t5_offline", "version": 1,
          "corpus_sha256": fingerprint,
          "given_sentencepiece_sha256": (
              hashlib.sha256(text_data.read_bytes(given)).hexdigest() if given else None),
          "offline": {k: v for k, v in config.offline.as_dict().items()
                      if k != "output_dir"},
          "model": config.model.as_dict(),
          "frozen_model": config.frozen_model.as_dict(),
          "lengths": [config.train_data.input_length, config.train_data.target_length]}


def prepare_offline(config: T5PromptTuningConfig, output_dir: str) -> dict:
  """Prepares in `output_dir` the offline task's records (train.tfrecord,
  validation.tfrecord) and, unless `config.frozen_model` names one, a
  SentencePiece model (spm.model, vocabulary = the model's vocab_size) and a
  pre-trained frozen model (frozen/); returns metadata.json's content with
  the paths. Reused as is when it exists for the same text and settings.
  Every example is made (and a task with none that fits refused) before the
  first file is written."""
  offline = config.offline
  documents = text_data.load_corpus(offline.corpus, offline.tfds_data_dir or None)
  metadata = _offline_metadata(config, text_data.corpus_fingerprint(documents))
  existing = text_data.reusable_metadata(output_dir, metadata)
  if existing:
    return existing
  splits = dict(zip(("train", "validation"), text_data.split_documents(
      documents, offline.validation_fraction, offline.seed)))
  pretrain = not config.frozen_model.checkpoint
  spm = (text_data.train_sentencepiece(splits["train"], config.model.vocab_size) if pretrain
         else text_data.read_bytes(config.frozen_model.sentencepiece_model))
  tokenizer = text_data.sentencepiece_tokenizer(spm)
  lengths = (config.train_data.input_length, config.train_data.target_length)

  def fitting(split, tasks, prefixed):
    """The pairs of `tasks` on a split that fit the lengths; ValueError if none."""
    pairs = [pair for task in tasks for pair in _fitting_pairs(text_data.text_to_text_pairs(
        splits[split], task, offline.words, prefix=f"{task}: " if prefixed else ""),
        tokenizer, *lengths)]
    return _nonempty(pairs, f"{split} {'pre-training' if prefixed else tasks[0]}")

  task_pairs = {split: fitting(split, [offline.task], False) for split in splits}
  mixtures = [fitting(split, offline.pretrain_tasks, True) for split in splits] if pretrain else []

  text_data.remove_metadata(output_dir)
  metadata["examples"] = {}
  for split, pairs in task_pairs.items():
    metadata[split] = os.path.join(output_dir, f"{split}.tfrecord")
    text_data.write_text_pairs(pairs, metadata[split])
    metadata["examples"][split] = len(pairs)
  if pretrain:
    metadata["sentencepiece_model"] = os.path.join(output_dir, "spm.model")
    text_data.write_bytes(spm, metadata["sentencepiece_model"])
    transformer, metadata["pretraining"] = _pretrain(config, tokenizer, *mixtures)
    metadata["checkpoint"] = tf.train.Checkpoint(**transformer.checkpoint_items).write(
        os.path.join(output_dir, "frozen", "t5"))
  text_data.write_metadata(metadata, output_dir)
  return metadata


# ---------------------------------------------------------------- config checks
def _has_input(data: TextToTextDataConfig) -> bool:
  return bool(data.input_path or data.tfds_name)


def check_config(config: T5PromptTuningConfig, logging_dir: str = "") -> None:
  """Raises ValueError listing every problem of `config` (nothing is written;
  only input paths, checkpoints and a given SentencePiece model are read)."""
  problems = (_frozen_model_problems(config) + _offline_problems(config, logging_dir)
              + _prompt_problems(config) + _data_problems(config))
  if problems:
    raise ValueError(f"{EXPERIMENT}: invalid config:\n  - " + "\n  - ".join(problems))


def _frozen_model_problems(config: T5PromptTuningConfig) -> List[str]:
  """A given frozen model: both paths, a checkpoint there, a SentencePiece model
  that fits the vocabulary."""
  problems = []
  frozen = config.frozen_model
  if bool(frozen.checkpoint) != bool(frozen.sentencepiece_model):
    problems.append("task.frozen_model.checkpoint and task.frozen_model."
                    "sentencepiece_model go together (give both, or neither to "
                    "pre-train a demo model on task.offline.corpus)")
  if frozen.checkpoint and sources.checkpoint_prefix(frozen.checkpoint) is None:
    problems.append(f"task.frozen_model.checkpoint: {_no_checkpoint(frozen.checkpoint)}")
  if frozen.sentencepiece_model:
    if not tf.io.gfile.exists(frozen.sentencepiece_model):
      problems.append("task.frozen_model.sentencepiece_model: no file "
                      f"{frozen.sentencepiece_model!r}")
    else:
      pieces = int(text_data.sentencepiece_tokenizer(
          text_data.read_bytes(frozen.sentencepiece_model)).vocab_size())
      if pieces > config.model.vocab_size:
        problems.append(f"task.frozen_model.sentencepiece_model: the SentencePiece model "
                        f"has {pieces} pieces, more than task.model.vocab_size "
                        f"({config.model.vocab_size})")
  return problems


def _offline_problems(config: T5PromptTuningConfig, logging_dir: str) -> List[str]:
  """Without a corpus: a frozen model and data must be given. With one: a
  valid spec, tasks and sizes, and somewhere to write."""
  problems = []
  frozen, offline = config.frozen_model, config.offline
  if not offline.corpus:
    if not frozen.checkpoint and not frozen.sentencepiece_model:
      problems.append("task.frozen_model is empty: give its checkpoint and "
                      "sentencepiece_model, or set task.offline.corpus (e.g. "
                      "python_manual) to pre-train a demo frozen model")
    for name in ("train_data", "validation_data"):
      if not _has_input(getattr(config, name)):
        problems.append(f"task.{name} has no input_path or tfds_name: set one, or "
                        "task.offline.corpus for the offline task")
    return problems
  try:
    text_data.parse_corpus_spec(offline.corpus)
  except ValueError as e:
    problems.append(f"task.offline.corpus: {e}")
  if offline.task not in text_data.TEXT_TO_TEXT_TASKS:
    problems.append(f"task.offline.task must be one of "
                    f"{sorted(text_data.TEXT_TO_TEXT_TASKS)}, got {offline.task!r}")
  unknown = set(offline.pretrain_tasks) - set(text_data.TEXT_TO_TEXT_TASKS)
  if unknown:
    problems.append(f"task.offline.pretrain_tasks: unknown {sorted(unknown)}")
  if offline.words < 1 or offline.pretrain_steps < 0 or offline.pretrain_batch_size < 1:
    problems.append("task.offline: words and pretrain_batch_size must be >= 1, "
                    "pretrain_steps >= 0")
  if not (offline.output_dir or logging_dir):
    problems.append("task.offline.output_dir is empty and there is no model_dir "
                    "to put the prepared files in")
  return problems


def _prompt_problems(config: T5PromptTuningConfig) -> List[str]:
  """A positive length and a known initialization that can draw its ids."""
  problems = []
  prompt = config.prompt
  if prompt.length < 1:
    problems.append(f"task.prompt.length must be >= 1, got {prompt.length}")
  if prompt.init not in PROMPT_INITS:
    problems.append(f"task.prompt.init must be one of {PROMPT_INITS}, got {prompt.init!r}")
  if prompt.init == "vocab" and min(prompt.init_vocab_limit, config.model.vocab_size) <= 3:
    problems.append("task.prompt.init_vocab_limit and task.model.vocab_size must "
                    "exceed 3 for init 'vocab'")
  return problems


def _data_problems(config: T5PromptTuningConfig) -> List[str]:
  """Lengths, existing records, prepared TFDS datasets, and train and
  validation lengths that agree."""
  problems = []
  for name in ("train_data", "validation_data"):
    data = getattr(config, name)
    if data.input_length < 2 or data.target_length < 2:
      problems.append(f"task.{name}: input_length and target_length must be >= 2")
    missing = sources.unmatched_patterns(data.input_path)
    if missing:
      problems.append(f"task.{name}.input_path: no file matches {missing}")
    if data.tfds_name and not data.input_path:
      try:
        sources.tfds_builder(data.tfds_name, data.tfds_data_dir,
                             [data.input_feature, data.target_feature])
      except ValueError as e:
        problems.append(f"task.{name}.tfds_name: {e}")
  if (config.train_data.input_length, config.train_data.target_length) != (
      config.validation_data.input_length, config.validation_data.target_length):
    problems.append("task.train_data and task.validation_data must have the same "
                    "input_length and target_length")
  return problems


# ---------------------------------------------------------------- task
@task_factory.register_task_cls(T5PromptTuningConfig)
class T5PromptTuningTask(base_task.Task):
  """Soft prompt-tuning of a frozen official T5Transformer.

  Making the task checks the config, then prepares the offline data and demo
  frozen model if the config asks for them: all before the trainer builds a
  model or writes a checkpoint.
  """

  def __init__(self, params: T5PromptTuningConfig, logging_dir: str = None,
               name: str = None):
    check_config(params, logging_dir or "")
    super().__init__(params, logging_dir=logging_dir, name=name)
    self.offline_metadata = {}
    if params.offline.corpus:
      self.offline_metadata = prepare_offline(
          params, params.offline.output_dir or os.path.join(logging_dir, OFFLINE_SUBDIR))
    self._checkpoint = (params.frozen_model.checkpoint
                        or self.offline_metadata["checkpoint"])
    self._sentencepiece = text_data.read_bytes(
        params.frozen_model.sentencepiece_model
        or self.offline_metadata["sentencepiece_model"])

  def build_model(self) -> SoftPromptT5:
    transformer = build_transformer(self.task_config.model)
    restore_frozen(transformer, self._checkpoint)
    return SoftPromptT5(transformer, initial_prompt(transformer, self.task_config.prompt))

  def build_inputs(self, params: TextToTextDataConfig, input_context=None):
    """Batches of `model_inputs` from TFRecords or TFDS (offline records, the
    training or validation split by `params.is_training`, when neither is set)."""
    if not _has_input(params):
      split = "train" if params.is_training else "validation"
      params = params.replace(input_path=self.offline_metadata[split])
    decoder = None
    if params.input_path:
      features = {name: tf.io.FixedLenFeature([], tf.string)
                  for name in (params.input_feature, params.target_feature)}
      decoder = functools.partial(tf.io.parse_single_example, features=features)
    tokenizer = text_data.sentencepiece_tokenizer(self._sentencepiece)
    reader = input_reader.InputReader(
        params=params, dataset_fn=tf.data.TFRecordDataset, decoder_fn=decoder,
        parser_fn=functools.partial(parse_example, tokenizer, params))
    return reader.read(input_context=input_context)

  def build_losses(self, labels, model_outputs, aux_losses=None) -> tf.Tensor:
    loss = sequence_loss(labels["decoder_target_tokens"], model_outputs)
    if aux_losses:
      loss += tf.add_n(aux_losses)
    return loss

  def build_metrics(self, training: bool = True):
    del training
    return [tf_keras.metrics.SparseCategoricalAccuracy(name="token_accuracy"),
            tf_keras.metrics.Mean(name="sequence_accuracy")]

  def process_metrics(self, metrics, labels, model_outputs, **kwargs):
    targets = labels["decoder_target_tokens"]  # [B, Lt]
    weights = tf.cast(targets != PAD_ID, tf.float32)
    wrong = tf.cast(tf.argmax(model_outputs, -1, output_type=targets.dtype) != targets,
                    tf.float32) * weights
    for metric in metrics:
      if metric.name == "token_accuracy":
        metric.update_state(targets, model_outputs, weights)
      else:
        metric.update_state(tf.cast(tf.reduce_sum(wrong, axis=-1) == 0, tf.float32))


@exp_factory.register_config_factory(EXPERIMENT)
def t5_prompt_tuning() -> common.ExperimentConfig:
  """A tiny frozen T5 pre-trained offline and a 4-token prompt trained by
  coordinate-wise Mnemosyne on the Python manual's word-reversal task; the YAML
  files in configs/experiments/ set sizes, data and optimizer."""
  return common.ExperimentConfig(
      task=T5PromptTuningConfig(offline=OfflineConfig(corpus="python_manual")),
      runtime=cfg.RuntimeConfig(distribution_strategy="auto"),
      trainer=common.TrainerConfig(optimizer_config=common.optimization("mnemosyne")),
      restrictions=["task.train_data.is_training != None",
                    "task.validation_data.is_training != None"])
