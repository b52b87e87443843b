"""Prepares text for the language pipelines (command line of `pipelines.text_data`).

BERT pre-training TFRecords (vocab.txt, train.tfrecord, validation.tfrecord,
metadata.json), from the offline Python reference manual or your own text:

    python -m pipelines.prepare_text --kind=bert --corpus=python_manual \
        --output_dir=data/bert_python_manual --vocab_size=512 \
        --max_seq_length=64 --max_predictions_per_seq=10 --dupe_factor=2
    python -m pipelines.prepare_text --kind=bert --input_file='books/*.txt' \
        --vocab_file=uncased_L-12_H-768_A-12/vocab.txt --output_dir=gs://bucket/bert

then point `task.train_data.input_path` / `task.validation_data.input_path` of
mnemosyne/bert_pretraining at the records. The masking flags are those of
official's `create_pretraining_data` (same names, meanings and defaults:
--max_seq_length, --max_predictions_per_seq, --masked_lm_prob,
--short_seq_prob, --dupe_factor, --random_seed, --do_lower_case,
--do_whole_word_mask, --use_v2_feature_names; --input_file as raw-text files and
--vocab_file as an existing vocabulary instead of learning one); the tokenizer is
tensorflow-text's BertTokenizer.

A SentencePiece model (T5 ids: pad 0, eos 1, unk 2) for mnemosyne/t5_prompt_tuning:

    python -m pipelines.prepare_text --kind=sentencepiece --corpus=python_manual \
        --vocab_size=512 --output_dir=data/t5

Every output is a deterministic function of the text and the flags.
"""

import os
import sys

from absl import app
from absl import flags

from pipelines import text_data

KINDS = ("bert", "sentencepiece")

flags.DEFINE_enum("kind", None, KINDS, "What to prepare.")
flags.DEFINE_string("corpus", None, "A corpus spec: python_manual, files:PATTERN[,...] or "
                    "tfds:NAME[:SPLIT[:FEATURE]] (or --input_file).")
flags.DEFINE_string("output_dir", None, "Where the files go (local or gs://).")
flags.DEFINE_integer("vocab_size", 512, "Most WordPiece tokens to learn / SentencePiece "
                     "pieces (BERT: the encoder's vocab_size).")
flags.DEFINE_float("validation_fraction", 0.1, "Share of documents held out (BERT).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory of a tfds: corpus.")

FLAGS = flags.FLAGS

# official's create_pretraining_data flags this command does not use.
_UNUSED_OFFICIAL_FLAGS = ("output_file", "sp_model_file", "max_ngram_size", "gzip_compress")


def check_flags() -> None:
  """Raises ValueError naming every problem of the flags, before any work."""
  problems = []
  if not FLAGS.kind:
    problems.append(f"--kind is required (one of {KINDS})")
  if not FLAGS.output_dir:
    problems.append("--output_dir is required")
  if bool(FLAGS.corpus) == bool(FLAGS.input_file):
    problems.append("give exactly one of --corpus and --input_file")
  if FLAGS.tokenization != "WordPiece":
    problems.append("--tokenization: only WordPiece (SentencePiece BERT data: use "
                    "official's create_pretraining_data)")
  for name in _UNUSED_OFFICIAL_FLAGS:
    if FLAGS[name].present:
      problems.append(f"--{name} is not used here (see --helpfull)")
  if FLAGS.kind == "sentencepiece" and FLAGS.vocab_file:
    problems.append("--vocab_file is for --kind=bert")
  if FLAGS.vocab_file and not os.path.exists(FLAGS.vocab_file) and "://" not in FLAGS.vocab_file:
    problems.append(f"--vocab_file {FLAGS.vocab_file!r} does not exist")
  if problems:
    raise ValueError("; ".join(problems))


def bert_spec(vocab_size: int) -> text_data.BertDataSpec:
  """The BertDataSpec of the flags."""
  return text_data.BertDataSpec(
      vocab_size=vocab_size, seq_length=FLAGS.max_seq_length,
      max_predictions_per_seq=FLAGS.max_predictions_per_seq,
      masked_lm_prob=FLAGS.masked_lm_prob, short_seq_prob=FLAGS.short_seq_prob,
      dupe_factor=FLAGS.dupe_factor, whole_word_mask=FLAGS.do_whole_word_mask,
      lower_case=FLAGS.do_lower_case, use_v2_feature_names=FLAGS.use_v2_feature_names,
      validation_fraction=FLAGS.validation_fraction, seed=FLAGS.random_seed)


def prepare() -> dict:
  """Runs the preparation the flags ask for; returns what it wrote."""
  check_flags()
  source = FLAGS.corpus or "files:" + FLAGS.input_file
  if FLAGS.kind == "bert":
    vocab = text_data.read_vocab(FLAGS.vocab_file) if FLAGS.vocab_file else None
    spec = bert_spec(len(vocab) if vocab else FLAGS.vocab_size)
    spec.validate()
    documents = text_data.load_corpus(source, FLAGS.tfds_data_dir)
    return text_data.write_bert_pretraining_data(documents, FLAGS.output_dir, spec,
                                                 source=source, vocab=vocab)
  documents = text_data.load_corpus(source, FLAGS.tfds_data_dir)
  path = os.path.join(FLAGS.output_dir, "spm.model")
  text_data.write_bytes(text_data.train_sentencepiece(documents, FLAGS.vocab_size), path)
  return {"sentencepiece_model": path, "source": source, "vocab_size": FLAGS.vocab_size,
          "documents": len(documents)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    written = prepare()
  except ValueError as e:
    sys.exit(f"pipelines.prepare_text: error: {e}")
  print(f"pipelines.prepare_text: wrote {FLAGS.output_dir}: {written}")


if __name__ == "__main__":
  app.run(main)
