"""Tests of pipelines.text_data: BERT pre-training records that official's
loader reads and that decode back to the source text, SentencePiece models,
text-to-text pairs, determinism and clear errors."""

import os
import re
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from official.nlp.data import pretrain_dataloader
from pipelines import prepare_text
from pipelines import text_data
from tests import testing
from tests import text_testing

SPEC = text_data.BertDataSpec(vocab_size=300, seq_length=48, max_predictions_per_seq=8,
                              dupe_factor=1, validation_fraction=0.2, seed=3)


def _load(directory, records, spec, v2):
  """Every example of a records file through official's BertPretrainDataLoader."""
  config = pretrain_dataloader.BertPretrainDataConfig(
      input_path=os.path.join(directory, records), seq_length=spec.seq_length,
      max_predictions_per_seq=spec.max_predictions_per_seq, global_batch_size=64,
      is_training=False, drop_remainder=False, use_v2_feature_names=v2)
  batches = list(pretrain_dataloader.BertPretrainDataLoader(config).load())
  return {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}


def _span_pattern(pieces):
  """A regex for the normalized text of WordPieces ([UNK] matches any word)."""
  parts = [".+?" if p == "[UNK]" else re.escape(p[2:] if p.startswith("##") else p)
           for p in pieces]
  return re.compile("".join(parts))


class BertRecordsTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    """The corpus, and its records for SPEC (shared by the tests)."""
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.corpus = text_testing.small_corpus(cls.dir)
    cls.documents = text_data.load_corpus(cls.corpus)
    cls.texts = [text_testing.normalize(" ".join(d)) for d in cls.documents]
    cls.spec_dir, cls.spec_metadata = cls._prepare("spec")

  @classmethod
  def _prepare(cls, name, spec=SPEC, **kwargs):
    directory = os.path.join(cls.dir, name)
    return directory, text_data.write_bert_pretraining_data(
        cls.documents, directory, spec, source=cls.corpus, **kwargs)

  @parameterized.named_parameters(("v1_feature_names", False), ("v2_feature_names", True))
  def test_records_parse_with_official_loader_and_decode_to_source_spans(self, v2):
    spec = text_data.BertDataSpec(**{**SPEC.__dict__, "use_v2_feature_names": v2})
    directory, metadata = (self._prepare("records_v2", spec) if v2
                           else (self.spec_dir, self.spec_metadata))
    vocab = text_data.read_vocab(os.path.join(directory, text_data.VOCAB))
    self.assertEqual(vocab[:5], list(text_data.RESERVED_TOKENS))
    self.assertLessEqual(len(vocab), spec.vocab_size)
    mask_id = vocab.index("[MASK]")
    masked_as_mask = masked_total = 0
    labels = []
    for records in (text_data.TRAIN_RECORDS, text_data.VALIDATION_RECORDS):
      data = _load(directory, records, spec, v2)
      self.assertLen(data["input_word_ids"], metadata["examples"][records])
      for i in range(len(data["input_word_ids"])):
        ids, mask = data["input_word_ids"][i], data["input_mask"][i]
        segments = data["input_type_ids"][i]
        n = int(mask.sum())
        np.testing.assert_array_equal(mask, [1] * n + [0] * (spec.seq_length - n))
        np.testing.assert_array_equal(ids[n:], 0)
        tokens = [vocab[t] for t in ids[:n]]
        separators = [j for j, t in enumerate(tokens) if t == "[SEP]"]
        self.assertEqual(tokens[0], "[CLS]")
        self.assertLen(separators, 2)
        first_sep = separators[0]
        self.assertEqual(separators[1], n - 1)
        np.testing.assert_array_equal(
            segments, [0] * (first_sep + 1) + [1] * (n - first_sep - 1)
            + [0] * (spec.seq_length - n))
        # Masks: official's count, sorted distinct positions inside the pieces.
        weights = data["masked_lm_weights"][i]
        k = int(weights.sum())
        np.testing.assert_array_equal(weights, [1.0] * k + [0.0] * (len(weights) - k))
        self.assertEqual(k, min(spec.max_predictions_per_seq,
                                max(1, int(round(n * spec.masked_lm_prob)))))
        positions = data["masked_lm_positions"][i][:k]
        self.assertTrue(np.all(np.diff(positions) > 0))
        self.assertTrue(all(0 < p < n - 1 and p != first_sep for p in positions))
        np.testing.assert_array_equal(data["masked_lm_positions"][i][k:], 0)
        original = ids.copy()
        original[positions] = data["masked_lm_ids"][i][:k]
        masked_as_mask += int(np.sum(ids[positions] == mask_id))
        masked_total += k
        # Both segments are spans of the source text; an actual next sentence
        # comes later in the same document.
        pieces = [vocab[t] for t in original[:n]]
        a = _span_pattern(pieces[1:first_sep])
        b = _span_pattern(pieces[first_sep + 1:n - 1])
        found_a = {d for d, text in enumerate(self.texts) if a.search(text)}
        found_b = {d for d, text in enumerate(self.texts) if b.search(text)}
        self.assertTrue(found_a and found_b, (pieces, a.pattern, b.pattern))
        label = int(data["next_sentence_labels"][i][0])
        labels.append(label)
        if label == 0:
          self.assertTrue(any(b.search(self.texts[d], a.search(self.texts[d]).start())
                              for d in found_a & found_b), (a.pattern, b.pattern))
    self.assertBetween(masked_as_mask / masked_total, 0.7, 0.9)  # 80% [MASK]
    # Official pairs a one-segment chunk with a random next, hence more than half.
    self.assertBetween(np.mean(labels), 0.3, 0.9)

  def test_deterministic_given_the_seed_and_cached(self):
    first, metadata = self.spec_dir, self.spec_metadata
    second, _ = self._prepare("same_again")
    other, _ = self._prepare("other_seed",
                             text_data.BertDataSpec(**{**SPEC.__dict__, "seed": 4}))
    for name in (text_data.VOCAB, text_data.TRAIN_RECORDS, text_data.VALIDATION_RECORDS,
                 text_data.METADATA):
      with open(os.path.join(first, name), "rb") as f, open(os.path.join(second, name), "rb") as g:
        self.assertEqual(f.read(), g.read(), name)
    with open(os.path.join(first, text_data.TRAIN_RECORDS), "rb") as f, open(
        os.path.join(other, text_data.TRAIN_RECORDS), "rb") as g:
      self.assertNotEqual(f.read(), g.read())
    # Same text and spec again: nothing is rewritten.
    stamp = os.path.getmtime(os.path.join(first, text_data.TRAIN_RECORDS))
    self.assertEqual(self._prepare("spec")[1], metadata)
    self.assertEqual(os.path.getmtime(os.path.join(first, text_data.TRAIN_RECORDS)), stamp)

  def test_given_vocabulary_is_used_as_is(self):
    learned = text_data.read_vocab(os.path.join(self.spec_dir, text_data.VOCAB))
    given = learned[:5] + sorted(learned[5:], reverse=True)  # other ids, same tokens
    directory, _ = self._prepare("given", vocab=given)
    self.assertEqual(text_data.read_vocab(os.path.join(directory, text_data.VOCAB)), given)

  def test_bad_inputs_are_named(self):
    with self.assertRaisesRegex(ValueError, "no text file matches '/no/such/dir/"):
      text_data.load_corpus("files:/no/such/dir/*.txt")
    with self.assertRaisesRegex(ValueError, "corpus must be 'python_manual'"):
      text_data.load_corpus("wikipedia")
    bad = text_data.BertDataSpec(vocab_size=3, seq_length=4, masked_lm_prob=1.5)
    with self.assertRaisesRegex(ValueError, "vocab_size must exceed 5.*seq_length must be "
                                "at least 8.*max_predictions_per_seq.*masked_lm_prob"):
      bad.validate()
    with self.assertRaisesRegex(ValueError, r"first token .* must be \[PAD\]"):
      self._prepare("bad_vocab", vocab=["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"])
    with self.assertRaisesRegex(ValueError, "more than the model's vocab_size 300"):
      self._prepare("big_vocab", vocab=list(text_data.RESERVED_TOKENS) + [
          f"w{i}" for i in range(300)])
    with self.assertRaisesRegex(ValueError, "at least 4 documents"):
      text_data.split_documents([["a"]] * 3, 0.2, 0)
    self.assertFalse(os.path.exists(os.path.join(self.dir, "bad_vocab")))


class TextTest(tf.test.TestCase):

  def test_read_text_files_official_format(self):
    path = os.path.join(self.create_tempdir().full_path, "a.txt")
    with open(path, "w") as f:
      f.write("One.\nTwo two.\n\n\nThree.\n  \nFour.\n")
    self.assertEqual(text_data.read_text_files([path]),
                     [["One.", "Two two."], ["Three."], ["Four."]])

  def test_split_sentences(self):
    self.assertEqual(
        text_data.split_sentences("First one. Second\n  line, e.g. this.\n\nNew (para)."),
        ["First one.", "Second line, e.g. this.", "New (para)."])

  def test_python_manual_is_real_text(self):
    documents = text_data.python_manual_documents()
    self.assertGreater(len(documents), 50)
    text = " ".join(s for d in documents for s in d)
    self.assertGreater(len(text), 300_000)
    self.assertIn("An identifier occurring as an atom is a name.", text)
    self.assertNotIn("*****", text)

  def test_text_to_text_pairs(self):
    documents = [["a b c d e f g h i", "j k"], ["l m n o"]]
    self.assertEqual(text_data.text_to_text_pairs(documents, "reverse_words", 4),
                     [("a b c d", "d c b a"), ("e f g h", "h g f e"), ("l m n o", "o n m l")])
    self.assertEqual(text_data.text_to_text_pairs(documents[1:], "copy", 2, prefix="copy: "),
                     [("copy: l m", "l m"), ("copy: n o", "n o")])
    with self.assertRaisesRegex(ValueError, "task must be one of"):
      text_data.text_to_text_pairs(documents, "sort", 2)
    path = os.path.join(self.create_tempdir().full_path, "pairs.tfrecord")
    text_data.write_text_pairs([("x y", "y x"), ("é", "é")], path)
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in text_data.TEXT_FEATURES}
    read = [(e["inputs"].numpy().decode(), e["targets"].numpy().decode()) for e in
            tf.data.TFRecordDataset(path).map(lambda r: tf.io.parse_single_example(r, spec))]
    self.assertEqual(read, [("x y", "y x"), ("é", "é")])


class PrepareTextCommandTest(tf.test.TestCase):
  """python -m pipelines.prepare_text: a bad corpus fails before writing; a
  SentencePiece model equals the library's for the same text."""

  def test_command(self):
    directory = self.create_tempdir().full_path
    missing = os.path.join(directory, "missing")
    _, exited = testing.run_main(prepare_text.main, kind="bert", input_file="/no/such/*.txt",
                                 output_dir=missing)
    self.assertEqual(str(exited.code),
                     "pipelines.prepare_text: error: no text file matches '/no/such/*.txt'")
    self.assertFalse(os.path.exists(missing))

    corpus = text_testing.small_corpus(directory, topics=6)
    stdout, exited = testing.run_main(prepare_text.main, kind="sentencepiece",
                                      corpus=corpus, vocab_size=150, output_dir=directory)
    self.assertIsNone(exited)
    self.assertStartsWith(stdout, f"pipelines.prepare_text: wrote {directory}")
    with open(os.path.join(directory, "spm.model"), "rb") as f:
      self.assertEqual(f.read(), text_data.train_sentencepiece(
          text_data.load_corpus(corpus), 150))


class SentencePieceTest(tf.test.TestCase):

  def test_deterministic_t5_ids_and_same_ids_as_the_sentencepiece_package(self):
    import sentencepiece
    documents = text_data.python_manual_documents()[:20]
    model = text_data.train_sentencepiece(documents, 300)
    self.assertEqual(model, text_data.train_sentencepiece(documents, 300))
    self.assertNotEqual(model, text_data.train_sentencepiece(documents, 299))
    reference = sentencepiece.SentencePieceProcessor(model_proto=model)
    self.assertEqual([reference.id_to_piece(i) for i in range(3)], ["<pad>", "</s>", "<unk>"])
    tokenizer = text_data.sentencepiece_tokenizer(model)
    self.assertEqual(int(tokenizer.vocab_size()), 300)
    sentences = [s for d in text_data.python_manual_documents()[40:45] for s in d][:50]
    ids = tokenizer.tokenize(sentences).to_list()
    self.assertEqual(ids, reference.encode(sentences))
    self.assertEqual([t.decode() for t in tokenizer.detokenize(tf.ragged.constant(ids)).numpy()],
                     reference.decode(ids))


if __name__ == "__main__":
  tf.test.main()
