"""Tests of the mnemosyne/t5_prompt_tuning experiment: a tiny frozen T5 made
offline, its soft prompt trained end to end through pipelines.train (only the
prompt changes, the frozen weights stay bit-identical to their checkpoint),
the evaluation recomputed independently, the prompt's placement, and bad
configs refused at start."""

import json
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import sentencepiece
import tensorflow as tf

from pipelines import figures
from pipelines import t5_prompt_tuning as t5p
from pipelines import text_data
from pipelines import train
from tests import pipeline_testing as pt
from tests import text_testing

CONFIG = os.path.join(text_testing.ROOT, "configs", "experiments", "t5_prompt_tuning_tiny.yaml")
LENGTH = 20
MODEL = {"num_layers": 1, "d_model": 16, "d_kv": 8, "num_heads": 2, "d_ff": 32,
         "vocab_size": 256}


def _override(**extra) -> str:
  """--params_override: a 1+1-layer T5 (d_model 16), 30 steps, whole-set eval,
  with `extra` ("a.b.c": value) on top."""
  return json.dumps(pt.nested({
      "task": {"model": dict(MODEL), "offline": {"words": 3},
               "train_data": {"input_length": LENGTH, "target_length": LENGTH,
                              "global_batch_size": 32},
               "validation_data": {"input_length": LENGTH, "target_length": LENGTH,
                                   "global_batch_size": 64}},
      "trainer": {"train_steps": 30, "steps_per_loop": 10, "summary_interval": 10,
                  "checkpoint_interval": 30, "validation_interval": 30,
                  "validation_steps": -1}}, extra))


def _arrays(values):
  """A canonical multiset of arrays: sorted (shape, bytes) pairs."""
  return sorted((np.shape(v), np.asarray(v, np.float32).tobytes()) for v in values)


class T5PromptTuningTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    """A tiny frozen T5: pre-trained offline (60 Adam steps) by the task's own
    preparation; its checkpoint is then given to the runs like a real one."""
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.corpus = text_testing.small_corpus(cls.dir)
    params = train.parse_config(t5p.EXPERIMENT, [CONFIG], [_override(**{
        "task.offline.corpus": cls.corpus, "task.offline.pretrain_steps": 60})])
    made = t5p.prepare_offline(params.task, os.path.join(cls.dir, "frozen"))
    cls.checkpoint, cls.spm_path = made["checkpoint"], made["sentencepiece_model"]
    reader = tf.train.load_checkpoint(cls.checkpoint)
    cls.frozen_values = {name: reader.get_tensor(name)
                         for name, _ in tf.train.list_variables(cls.checkpoint)
                         if name.endswith("VARIABLE_VALUE")}
    cls.given = {"task.offline.corpus": cls.corpus,
                 "task.frozen_model.checkpoint": cls.checkpoint,
                 "task.frozen_model.sentencepiece_model": cls.spm_path}

  def test_trains_only_the_prompt_and_reports_token_accuracy(self):
    model_dir = os.path.join(self.dir, "run")
    params, _, strategy, task = train.prepare(t5p.EXPERIMENT, "train_and_eval", model_dir,
                                              [CONFIG], _override(**self.given))
    self.assertEqual(params.trainer.optimizer_config.optimizer.type, "mnemosyne")
    model, _ = train.run(params, strategy, task, "train_and_eval", model_dir)

    losses = [loss for _, loss in text_testing.training_losses(model_dir)]
    self.assertLen(losses, 3)
    self.assertLess(losses[-1], losses[0])
    # Only the prompt trained: the frozen weights are bit-identical to their
    # checkpoint, the trainer's checkpoints hold no T5 weight.
    self.assertEqual([v.name for v in model.trainable_variables], ["soft_prompt:0"])
    self.assertEqual(_arrays(v.numpy() for v in model.transformer.variables),
                     _arrays(self.frozen_values.values()))
    saved = tf.train.list_variables(tf.train.latest_checkpoint(model_dir))
    self.assertEqual([n for n, _ in saved if n.startswith("model/")],
                     ["model/soft_prompt/.ATTRIBUTES/VARIABLE_VALUE"])
    # The prompt started as the embeddings of seeded token ids, and moved.
    ids = np.random.RandomState(params.task.prompt.seed).randint(3, MODEL["vocab_size"], 4)
    embedding = [v for v in self.frozen_values.values()
                 if v.shape == (MODEL["vocab_size"], MODEL["d_model"])]
    self.assertLen(embedding, 1)
    start = embedding[0][ids]
    self.assertGreater(np.abs(model.prompt.numpy() - start).max(), 1e-4)

    # Token accuracy of the last evaluation, recomputed with the sentencepiece
    # package's own tokenizer over the validation records.
    evaluation = {tag: points[-1][1] for tag, points in figures.read_scalars(
        os.path.join(model_dir, params.trainer.validation_summary_subdir)).items()}
    processor = sentencepiece.SentencePieceProcessor(model_file=self.spm_path)
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in text_data.TEXT_FEATURES}
    pairs = [(e["inputs"].numpy().decode(), e["targets"].numpy().decode()) for e in
             tf.data.TFRecordDataset(task.offline_metadata["validation"]).map(
                 lambda r: tf.io.parse_single_example(r, spec))]

    def encode(texts):
      out = np.zeros((len(texts), LENGTH), np.int32)
      for i, ids in enumerate(processor.encode(texts)):
        ids = ids[:LENGTH - 1] + [text_data.T5_EOS_ID]
        out[i, :len(ids)] = ids
      return out

    inputs, targets = encode([p[0] for p in pairs]), encode([p[1] for p in pairs])
    decoder_inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], 1)
    logits = model({"encoder_input_tokens": inputs, "decoder_target_tokens": targets,
                    "decoder_input_tokens": decoder_inputs}).numpy()
    weights = targets != 0
    right = (logits.argmax(-1) == targets) & weights
    self.assertAllClose(evaluation["token_accuracy"], right.sum() / weights.sum(), atol=1e-6)
    self.assertAllClose(evaluation["sequence_accuracy"],
                        np.mean(right.sum(-1) == weights.sum(-1)), atol=1e-6)

  def test_prompt_acts_as_prepended_position_free_tokens(self):
    """The model's logits equal an encoder run here on [P; embed(tokens)] in
    that order (P without relative-position bias, tokens with theirs)."""
    config = t5p.T5ModelConfig(**MODEL)
    tf.random.set_seed(1)
    transformer = t5p.build_transformer(config)
    prompt = np.random.RandomState(0).normal(size=(3, MODEL["d_model"])).astype(np.float32)
    model = t5p.SoftPromptT5(transformer, prompt)
    tokens = tf.constant([[5, 9, 17, 4, 1, 0], [7, 7, 3, 1, 0, 0]])
    targets = tf.constant([[8, 6, 1, 0], [9, 1, 0, 0]])
    got = model(t5p.model_inputs(tokens, targets))

    encoder = transformer.encoder
    batch, n, length = 2, len(prompt), tokens.shape[1]
    x = tf.concat([tf.broadcast_to(prompt, [batch, n, MODEL["d_model"]]),
                   encoder.input_embed(tokens)], axis=1)
    bias = tf.pad(encoder.relative_embedding(length, length), [[0, 0], [0, 0], [n, 0], [n, 0]])
    eligible = tf.concat([tf.ones([batch, n]), tf.cast(tokens != 0, tf.float32)], axis=1)
    mask = (1.0 - eligible[:, None, :, None] * eligible[:, None, None, :]) * -1e9
    for layer in encoder.encoder_layers:
      x = layer(x, attention_mask=mask, position_bias=bias)
    expected = transformer.decode(
        encoder.output_norm(x), decoder_target_tokens=targets,
        encoder_dense_inputs=eligible[..., None],  # only its non-zero rows matter (masks)
        decoder_input_tokens=t5p.shift_right(targets))["logits"]
    self.assertAllClose(got, expected, atol=1e-5)

  def test_encoding_matches_the_sentencepiece_package(self):
    processor = sentencepiece.SentencePieceProcessor(model_file=self.spm_path)
    tokenizer = text_data.sentencepiece_tokenizer(text_data.read_bytes(self.spm_path))
    texts = ["Assert statements are a", "x", "a much longer sentence that cannot fit in"]
    got = t5p.encode_texts(tokenizer, tf.constant(texts), 6).numpy()
    for row, ids in zip(got, processor.encode(texts)):
      ids = ids[:5] + [text_data.T5_EOS_ID]
      self.assertEqual(row.tolist(), ids + [0] * (6 - len(ids)))
    data = t5p.TextToTextDataConfig(input_feature="sentence", target_feature="label",
                                    label_names=["negative", "positive"],
                                    input_length=8, target_length=4)
    parsed = t5p.parse_example(tokenizer, data, {"sentence": tf.constant("x"),
                                                 "label": tf.constant(1)})
    expected = processor.encode("positive")[:3] + [text_data.T5_EOS_ID]
    self.assertEqual(parsed["decoder_target_tokens"].numpy().tolist(),
                     expected + [0] * (4 - len(expected)))

  def test_checkpoint_that_does_not_fit_the_model(self):
    params = train.parse_config(t5p.EXPERIMENT, [CONFIG], [_override(**self.given, **{
        "task.model.d_ff": 48, "task.offline.output_dir": os.path.join(self.dir, "d_ff")})])
    task = t5p.T5PromptTuningTask(params.task)
    with self.assertRaisesRegex(ValueError, "T5 checkpoint .* does not fit task.model"):
      task.build_model()

  def test_paper_scale_config(self):
    params = train.parse_config(t5p.EXPERIMENT, [os.path.join(
        text_testing.ROOT, "configs", "experiments", "t5_xxl_prompt_tuning.yaml")])
    model = params.task.model
    self.assertEqual((model.num_layers, model.d_model, model.num_heads, model.d_kv,
                      model.d_ff, model.vocab_size), (24, 4096, 64, 64, 10240, 32128))
    self.assertEqual(params.task.prompt.length, 100)
    self.assertEqual(params.trainer.optimizer_config.optimizer.mnemosyne.mode, "coordinate")
    with self.assertRaisesRegex(ValueError, "task.frozen_model is empty"):
      t5p.check_config(params.task, self.dir)

  @parameterized.named_parameters(
      ("missing_checkpoint", {"task.frozen_model.checkpoint": "/no/ckpt"},
       "task.frozen_model.checkpoint: no T5 checkpoint at '/no/ckpt'"),
      ("missing_sentencepiece", {"task.frozen_model.sentencepiece_model": "/no/spm.model"},
       "task.frozen_model.sentencepiece_model: no file '/no/spm.model'"),
      ("checkpoint_alone", {"task.frozen_model.sentencepiece_model": ""},
       "checkpoint and task.frozen_model.sentencepiece_model go together"),
      ("no_text", {"task.offline.corpus": ""},
       "task.train_data has no input_path or tfds_name: set one, or task.offline.corpus"),
      ("no_frozen_model_no_text", {"task.offline.corpus": "",
                                   "task.frozen_model.checkpoint": "",
                                   "task.frozen_model.sentencepiece_model": ""},
       "task.frozen_model is empty"),
      ("tfds_not_prepared", {"task.train_data.tfds_name": "glue/sst2",
                             "task.train_data.tfds_data_dir": "/no/tfds",
                             "task.train_data.input_feature": "sentence",
                             "task.train_data.target_feature": "label"},
       "task.train_data.tfds_name: TFDS dataset 'glue/sst2' is not prepared in '/no/tfds"),
      ("bad_corpus", {"task.offline.corpus": "books"},
       "task.offline.corpus: corpus must be 'python_manual'"),
      ("unknown_task", {"task.offline.task": "sort_words"},
       "task.offline.task must be one of \\['copy', 'reverse_words'\\]"),
      ("bad_prompt", {"task.prompt.length": 0, "task.prompt.init": "zeros"},
       "prompt.length must be >= 1, got 0\n.*prompt.init must be one of"),
      ("missing_records", {"task.train_data.input_path": "/no/*.tfrecord"},
       "task.train_data.input_path: no file matches"),
      ("lengths_disagree", {"task.validation_data.target_length": 8},
       "the same input_length and target_length"),
      ("vocabulary_too_small", {"task.model.vocab_size": 100},
       "the SentencePiece model has 256 pieces, more than task.model.vocab_size \\(100\\)"),
  )
  def test_bad_configs_fail_at_start_naming_the_field(self, extra, message):
    model_dir = os.path.join(self.create_tempdir().full_path, "run")
    with self.assertRaisesRegex(ValueError, message):
      train.prepare(t5p.EXPERIMENT, "train", model_dir, [CONFIG],
                    _override(**{**self.given, **extra}))
    self.assertFalse(os.path.exists(model_dir))


if __name__ == "__main__":
  tf.test.main()
