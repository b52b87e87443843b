"""Experiment `mnemosyne/bert_pretraining`: BERT pre-training (masked LM and
next-sentence prediction) with Mnemosyne or Adam.

Official's masked-LM task (`official.nlp.tasks.masked_lm.MaskedLMTask`) with
official's BERT encoder and `BertPretrainDataLoader`; this module only adds

* `task.text_data`: raw text prepared into official's pre-training TFRecords
  when the task starts (`pipelines.text_data`: WordPiece vocabulary learned by
  tensorflow-text, official's instance builder). Set `text_data.corpus` (e.g.
  `python_manual`, the offline default) and leave both `input_path`s empty; the
  training records feed `train_data` (is_training) and the held-out documents'
  records feed `validation_data`. For real runs leave `text_data.corpus` empty
  and point `input_path` at prepared TFRecords (local or GCS globs, comma
  separated), e.g. from `python -m pipelines.prepare_text bert`.
* checks, before anything is built or written, that paths exist and the data,
  model and vocabulary agree, with messages that name the config field.

The optimizer is `trainer.optimizer_config` (`pipelines.common`): Mnemosyne in
any mode, or Adam/AdamW. Evaluation reports official's metrics: the masked-LM
loss (`lm_example_loss`) and accuracy (`masked_lm_accuracy`), and the
next-sentence loss and accuracy.
"""

import dataclasses
import os
from typing import List

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.core import task_factory
from official.modeling import hyperparams
from official.nlp.configs import bert
from official.nlp.configs import encoders
from official.nlp.data import pretrain_dataloader
from official.nlp.tasks import masked_lm

from pipelines import common
from pipelines import sources
from pipelines import text_data

EXPERIMENT = "mnemosyne/bert_pretraining"
DATA_SUBDIR = "text_data"


@dataclasses.dataclass
class TextDataConfig(hyperparams.Config):
  """Raw text to prepare into TFRecords when the task starts.

  Attributes:
    corpus: a corpus spec of `pipelines.text_data.load_corpus`
      ("python_manual", "files:PATTERN,...", "tfds:NAME[:SPLIT[:FEATURE]]"), or
      "" to read `train_data.input_path` / `validation_data.input_path`.
    output_dir: where the records go; "" = `<model_dir>/text_data`. Reused when
      it already holds data made from the same text and settings.
    tfds_data_dir: TFDS data directory for "tfds:" corpora ("" = TFDS default).
    The other fields are those of `pipelines.text_data.BertDataSpec`; its
    vocab_size, seq_length, max_predictions_per_seq and use_v2_feature_names
    come from the encoder and `train_data`.
  """
  corpus: str = ""
  output_dir: str = ""
  tfds_data_dir: str = ""
  masked_lm_prob: float = 0.15
  short_seq_prob: float = 0.1
  dupe_factor: int = 2
  whole_word_mask: bool = False
  lower_case: bool = True
  validation_fraction: float = 0.1
  seed: int = 12345


@dataclasses.dataclass
class BertPretrainingConfig(masked_lm.MaskedLMConfig):
  """official's MaskedLMConfig with BERT pre-training data and `text_data`."""
  train_data: pretrain_dataloader.BertPretrainDataConfig = dataclasses.field(
      default_factory=pretrain_dataloader.BertPretrainDataConfig)
  validation_data: pretrain_dataloader.BertPretrainDataConfig = dataclasses.field(
      default_factory=lambda: pretrain_dataloader.BertPretrainDataConfig(
          is_training=False))
  text_data: TextDataConfig = dataclasses.field(default_factory=TextDataConfig)


def data_spec(config: BertPretrainingConfig) -> text_data.BertDataSpec:
  """The preparation settings `config` implies (vocabulary size = the encoder's)."""
  text, train = config.text_data, config.train_data
  return text_data.BertDataSpec(
      vocab_size=config.model.encoder.bert.vocab_size, seq_length=train.seq_length,
      max_predictions_per_seq=train.max_predictions_per_seq,
      masked_lm_prob=text.masked_lm_prob, short_seq_prob=text.short_seq_prob,
      dupe_factor=text.dupe_factor, whole_word_mask=text.whole_word_mask,
      lower_case=text.lower_case, use_v2_feature_names=train.use_v2_feature_names,
      validation_fraction=text.validation_fraction, seed=text.seed)


def check_config(config: BertPretrainingConfig, logging_dir: str = "") -> None:
  """Raises ValueError listing every problem of `config` (nothing is read or
  written but the existence of input files)."""
  problems = _model_problems(config) + (
      _text_data_problems(config, logging_dir) if config.text_data.corpus
      else _records_problems(config))
  if problems:
    raise ValueError(f"{EXPERIMENT}: invalid config:\n  - " + "\n  - ".join(problems))


def _model_problems(config: BertPretrainingConfig) -> List[str]:
  """A BERT encoder whose positions and heads fit the data; train and
  validation data of the same shape."""
  problems = []
  if config.model.encoder.type != "bert":
    problems.append(f"task.model.encoder.type must be 'bert', got "
                    f"{config.model.encoder.type!r}")
  train, validation = config.train_data, config.validation_data
  for field in ("seq_length", "max_predictions_per_seq", "use_v2_feature_names",
                "use_next_sentence_label"):
    if getattr(train, field) != getattr(validation, field):
      problems.append(f"task.train_data.{field} ({getattr(train, field)}) and "
                      f"task.validation_data.{field} ({getattr(validation, field)}) "
                      "must agree")
  if train.seq_length > config.model.encoder.bert.max_position_embeddings:
    problems.append(f"task.train_data.seq_length ({train.seq_length}) exceeds "
                    "task.model.encoder.bert.max_position_embeddings "
                    f"({config.model.encoder.bert.max_position_embeddings})")
  heads = {head.name for head in config.model.cls_heads}
  if train.use_next_sentence_label and "next_sentence" not in heads:
    problems.append("task.train_data.use_next_sentence_label needs a cls_head named "
                    "'next_sentence' in task.model.cls_heads")
  return problems


def _text_data_problems(config: BertPretrainingConfig, logging_dir: str) -> List[str]:
  """Raw text to prepare: a corpus spec, no records as well, somewhere to
  write, and preparation settings that work."""
  problems = []
  try:
    text_data.parse_corpus_spec(config.text_data.corpus)
  except ValueError as e:
    problems.append(f"task.text_data.corpus: {e}")
  for name in ("train_data", "validation_data"):
    input_path = getattr(config, name).input_path
    if input_path:
      problems.append(f"task.text_data.corpus is set, so task.{name}.input_path must "
                      f"be empty (got {input_path!r})")
  if not (config.text_data.output_dir or logging_dir):
    problems.append("task.text_data.output_dir is empty and there is no model_dir "
                    "to put the prepared data in")
  try:
    data_spec(config).validate()
  except ValueError as e:
    problems.append(f"task.text_data: {e}")
  return problems


def _records_problems(config: BertPretrainingConfig) -> List[str]:
  """Prepared TFRecords: training records given, every pattern matching files."""
  problems = []
  if not config.train_data.input_path:
    problems.append("set task.train_data.input_path (TFRecords) or "
                    "task.text_data.corpus (raw text to prepare)")
  for name in ("train_data", "validation_data"):
    missing = sources.unmatched_patterns(getattr(config, name).input_path)
    if missing:
      problems.append(f"task.{name}.input_path: no file matches {missing}")
  return problems


@task_factory.register_task_cls(BertPretrainingConfig)
class BertPretrainingTask(masked_lm.MaskedLMTask):
  """official's MaskedLMTask reading TFRecords prepared from `text_data` (if set).

  The config is checked and the data prepared when the task is made, i.e.
  before the trainer builds a model or writes a checkpoint.
  """

  def __init__(self, params: BertPretrainingConfig, logging_dir: str = None,
               name: str = None):
    check_config(params, logging_dir or "")
    super().__init__(params, logging_dir=logging_dir, name=name)
    self._prepared_dir = None
    self.data_metadata = {}  # of the prepared records, if any
    if params.text_data.corpus:
      self._prepared_dir = (params.text_data.output_dir
                            or os.path.join(logging_dir, DATA_SUBDIR))
      documents = text_data.load_corpus(params.text_data.corpus,
                                        params.text_data.tfds_data_dir or None)
      self.data_metadata = text_data.write_bert_pretraining_data(
          documents, self._prepared_dir, data_spec(params),
          source=params.text_data.corpus)

  def build_inputs(self, params, input_context=None):
    """official's pre-training dataset; with `text_data`, over the prepared
    training records if `params.is_training`, else the validation records."""
    if self._prepared_dir and not params.input_path:
      records = text_data.TRAIN_RECORDS if params.is_training else (
          text_data.VALIDATION_RECORDS)
      params = params.replace(input_path=os.path.join(self._prepared_dir, records))
    return super().build_inputs(params, input_context)


def next_sentence_head(inner_dim: int) -> bert.ClsHeadConfig:
  """official's next-sentence head (the name its metrics look for)."""
  return bert.ClsHeadConfig(inner_dim=inner_dim, num_classes=2, dropout_rate=0.1,
                            name="next_sentence")


@exp_factory.register_config_factory(EXPERIMENT)
def bert_pretraining() -> common.ExperimentConfig:
  """BERT-base (official's encoder defaults: 12 layers, hidden 768, 12 heads,
  vocabulary 30,522) pre-trained with coordinate-wise Mnemosyne; data from
  `task.train_data.input_path` or `task.text_data`. The YAML files in
  configs/experiments/ set sizes, data and optimizer."""
  return common.ExperimentConfig(
      task=BertPretrainingConfig(
          model=bert.PretrainerConfig(
              encoder=encoders.EncoderConfig(type="bert"),
              cls_heads=[next_sentence_head(768)])),
      runtime=cfg.RuntimeConfig(distribution_strategy="auto"),
      trainer=common.TrainerConfig(optimizer_config=common.optimization("mnemosyne")),
      restrictions=["task.train_data.is_training != None",
                    "task.validation_data.is_training != None"])


__all__ = ["BertPretrainingConfig", "BertPretrainingTask", "TextDataConfig",
           "bert_pretraining", "check_config", "data_spec", "EXPERIMENT"]
