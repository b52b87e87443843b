"""Tests of the mnemosyne/bert_pretraining experiment: a tiny BERT pre-trained
end to end through pipelines.train on offline text, its evaluation checked
against an independent computation, and bad configs refused at start."""

import json
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tf_keras

from pipelines import bert_pretraining
from pipelines import figures
from pipelines import text_data
from pipelines import train
from tests import pipeline_testing as pt
from tests import text_testing

CONFIG = os.path.join(text_testing.ROOT, "configs", "experiments", "bert_pretraining_tiny.yaml")
SEQ, PREDICTIONS, BATCH = 32, 5, 16


def _tiny(corpus: str, **extra) -> str:
  """--params_override of a 1-layer BERT (hidden 16) on `corpus`, 30 steps,
  with `extra` ("a.b.c": value) on top."""
  return json.dumps(pt.nested({
      "task": {
          "model": {"encoder": {"bert": {"vocab_size": 300, "hidden_size": 16,
                                         "num_layers": 1, "intermediate_size": 32}},
                    "cls_heads": [{"inner_dim": 16, "num_classes": 2, "dropout_rate": 0.0,
                                   "name": "next_sentence"}]},
          "text_data": {"corpus": corpus, "dupe_factor": 1},
          "train_data": {"seq_length": SEQ, "max_predictions_per_seq": PREDICTIONS,
                         "global_batch_size": BATCH},
          "validation_data": {"seq_length": SEQ, "max_predictions_per_seq": PREDICTIONS,
                              "global_batch_size": BATCH}},
      "trainer": {"train_steps": 30, "steps_per_loop": 10, "summary_interval": 10,
                  "checkpoint_interval": 30, "validation_interval": 30,
                  "validation_steps": -1}}, extra))


def _validation_examples(path: str):
  """The validation records parsed here (not by official's loader): model inputs
  and the masked-LM labels, in file order."""
  features = {name: tf.io.FixedLenFeature([SEQ], tf.int64)
              for name in ("input_ids", "input_mask", "segment_ids")}
  features.update({name: tf.io.FixedLenFeature([PREDICTIONS], tf.int64)
                   for name in ("masked_lm_positions", "masked_lm_ids")})
  features["masked_lm_weights"] = tf.io.FixedLenFeature([PREDICTIONS], tf.float32)
  for record in tf.data.TFRecordDataset(path):
    yield tf.io.parse_single_example(record, features)


class BertPretrainingTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.corpus = text_testing.small_corpus(cls.dir)

  def test_pretrains_with_mnemosyne_and_reports_mlm_loss_and_accuracy(self):
    model_dir = os.path.join(self.dir, "mnemosyne")
    params, _, strategy, task = train.prepare(
        bert_pretraining.EXPERIMENT, "train_and_eval", model_dir, [CONFIG],
        _tiny(self.corpus))
    self.assertEqual(params.trainer.optimizer_config.optimizer.type, "mnemosyne")
    model, _ = train.run(params, strategy, task, "train_and_eval", model_dir)

    losses = [loss for _, loss in text_testing.training_losses(model_dir)]
    self.assertLen(losses, 3)
    self.assertLess(losses[-1], losses[0] - 0.2)
    evaluation = {tag: points[-1] for tag, points in figures.read_scalars(
        os.path.join(model_dir, params.trainer.validation_summary_subdir)).items()}
    self.assertEqual(evaluation["masked_lm_accuracy"][0], 30)

    # The same numbers, computed here over the validation records in the
    # evaluation's batches: accuracy over all masked tokens, loss = mean over
    # batches of each batch's weighted masked-LM cross-entropy.
    hits = weights_total = 0.0
    batch_losses = []
    examples = list(_validation_examples(
        os.path.join(model_dir, bert_pretraining.DATA_SUBDIR, text_data.VALIDATION_RECORDS)))
    for start in range(0, len(examples), BATCH):
      batch = {k: tf.stack([e[k] for e in examples[start:start + BATCH]]) for k in examples[0]}
      logits = model({"input_word_ids": batch["input_ids"], "input_mask": batch["input_mask"],
                      "input_type_ids": batch["segment_ids"],
                      "masked_lm_positions": batch["masked_lm_positions"]},
                     training=False)["mlm_logits"].numpy()  # [B, P, V]
      labels, weights = batch["masked_lm_ids"].numpy(), batch["masked_lm_weights"].numpy()
      hits += np.sum((logits.argmax(-1) == labels) * weights)
      weights_total += weights.sum()
      shifted = logits - logits.max(-1, keepdims=True)
      log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
      nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
      batch_losses.append(np.sum(nll * weights) / weights.sum())
    self.assertAllClose(evaluation["masked_lm_accuracy"][1], hits / weights_total, atol=1e-6)
    self.assertAllClose(evaluation["lm_example_loss"][1], np.mean(batch_losses), rtol=1e-4)
    self.assertGreater(hits / weights_total, 0.0)

  def test_adam_through_the_optimizer_config(self):
    params = train.parse_config(bert_pretraining.EXPERIMENT, [CONFIG], [
        _tiny(self.corpus), "trainer.optimizer_config.optimizer.type=adam,"
        "trainer.optimizer_config.learning_rate.constant.learning_rate=0.001"])
    optimizer = bert_pretraining.BertPretrainingTask.create_optimizer(
        params.trainer.optimizer_config)
    self.assertIsInstance(optimizer, (tf_keras.optimizers.Adam,
                                      tf_keras.optimizers.legacy.Adam))
    self.assertAllClose(float(optimizer.learning_rate), 1e-3)

  def test_paper_scale_config(self):
    params = train.parse_config(bert_pretraining.EXPERIMENT, [os.path.join(
        text_testing.ROOT, "configs", "experiments", "bert_base_pretraining.yaml")])
    bert = params.task.model.encoder.bert
    self.assertEqual((bert.num_layers, bert.hidden_size, bert.num_attention_heads,
                      bert.intermediate_size, bert.vocab_size), (12, 768, 12, 3072, 30522))
    self.assertEqual(params.trainer.optimizer_config.optimizer.mnemosyne.mode, "tensor")
    with self.assertRaisesRegex(ValueError, "set task.train_data.input_path"):
      bert_pretraining.check_config(params.task, self.dir)

  @parameterized.named_parameters(
      ("missing_records", dict(**{"task.text_data.corpus": "",
                                  "task.train_data.input_path": "/no/such/*.tfrecord"}),
       r"task.train_data.input_path: no file matches \['/no/such/\*.tfrecord'\]"),
      ("no_data_at_all", {"task.text_data.corpus": ""},
       "set task.train_data.input_path .* or task.text_data.corpus"),
      ("corpus_and_records", {"task.validation_data.input_path": "/tmp/x.tfrecord"},
       "task.text_data.corpus is set, so task.validation_data.input_path must be empty"),
      ("bad_corpus", {"task.text_data.corpus": "wikipedia"},
       "task.text_data.corpus: corpus must be 'python_manual'"),
      ("missing_text_files", {"task.text_data.corpus": "files:/no/such/*.txt"},
       "no text file matches '/no/such/\\*.txt'"),
      ("sequence_too_long", {"task.train_data.seq_length": 600,
                             "task.validation_data.seq_length": 600},
       "seq_length \\(600\\) exceeds task.model.encoder.bert.max_position_embeddings"),
      ("lengths_disagree", {"task.validation_data.seq_length": 16},
       "task.train_data.seq_length \\(32\\) and task.validation_data.seq_length \\(16\\)"),
      ("no_next_sentence_head", {"task.model.cls_heads": []},
       "needs a cls_head named 'next_sentence'"),
      ("tiny_vocabulary", {"task.model.encoder.bert.vocab_size": 4},
       "task.text_data: invalid BERT data spec: vocab_size must exceed 5"),
  )
  def test_bad_configs_fail_at_start_naming_the_field(self, extra, message):
    model_dir = os.path.join(self.create_tempdir().full_path, "run")
    with self.assertRaisesRegex(ValueError, message):
      train.prepare(bert_pretraining.EXPERIMENT, "train", model_dir, [CONFIG],
                    _tiny(self.corpus, **extra))
    self.assertFalse(os.path.exists(model_dir))


if __name__ == "__main__":
  tf.test.main()
