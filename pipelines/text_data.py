"""Text for the language pipelines: raw text -> BERT pre-training TFRecords, and
SentencePiece models for T5.

A corpus is a list of documents, each a list of sentences (official's raw-text
format: one sentence per line, a blank line between documents). Three sources,
named by a corpus spec string (`load_corpus`):

  python_manual                 the Python reference manual that ships with CPython
                                (`pydoc_data.topics`, about 465,000 characters of
                                English in 79 topics; no download)
  files:PATTERN[,PATTERN...]    a user's raw-text files in official's format (globs;
                                local or GCS paths)
  tfds:NAME[:SPLIT[:FEATURE]]   a TFDS text dataset (each example's FEATURE is one
                                document); needs the dataset prepared in TFDS's data
                                directory, or the internet

BERT data (`write_bert_pretraining_data`): a WordPiece vocabulary learned by
tensorflow-text's `bert_vocab_from_dataset` on the training documents,
tokenization by `tensorflow_text.BertTokenizer`, then official's own
`create_instances_from_document` (sentence pairs, next-sentence labels, 80/10/10
masking) and `write_instance_to_example_files` (the exact tf.Example features
official's `BertPretrainDataLoader` reads: input_ids/segment_ids, or
input_word_ids/input_type_ids with `use_v2_feature_names`, plus input_mask,
masked_lm_positions, masked_lm_ids, masked_lm_weights, next_sentence_labels).

T5 data: word-level text-to-text tasks on a corpus' sentences
(`text_to_text_pairs`, e.g. reverse the order of 4 words) written as TFRecords
of "inputs"/"targets" strings (`write_text_pairs`), and a unigram SentencePiece
model trained by the `sentencepiece` package with T5's ids (pad 0, eos 1, unk 2,
no bos; `train_sentencepiece`), used through
`tensorflow_text.SentencepieceTokenizer`.

Everything is a deterministic function of its inputs and `seed`.
"""

import dataclasses
import hashlib
import io
import json
import os
import random
import re
import uuid
from typing import List, Sequence, Tuple

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset

from official.nlp.data import create_pretraining_data

from pipelines import sources

Document = List[str]  # sentences

# Official pads every feature with id 0, so [PAD] must be id 0; official's
# instance builder writes the literal tokens "[CLS]", "[SEP]" and "[MASK]".
RESERVED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
T5_PAD_ID, T5_EOS_ID, T5_UNK_ID = 0, 1, 2

# A sentence ends at . ! or ? followed by white space and an upper-case letter,
# a digit or an opening quote/bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def split_sentences(text: str) -> Document:
  """Sentences of `text`: paragraphs (split at blank lines) with their lines
  joined, cut at sentence ends; white space collapsed, empty pieces dropped."""
  sentences = []
  for paragraph in re.split(r"\n\s*\n", text):
    flat = " ".join(paragraph.split())
    sentences.extend(s for s in _SENTENCE_END.split(flat) if s)
  return sentences


# Heading underlines of the manual's plain-text rendering ("*****", "=====", ...).
_UNDERLINE = re.compile(r"([*=~^-])\1{2,}")


def python_manual_documents() -> List[Document]:
  """The Python reference manual shipped with CPython, one document per topic
  (in sorted topic order), heading underlines removed."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  documents = [split_sentences(_UNDERLINE.sub(" ", topics.topics[key]))
               for key in sorted(topics.topics)]
  return [d for d in documents if d]


def read_text_files(patterns: Sequence[str]) -> List[Document]:
  """Documents of raw-text files in official's format (one sentence per line,
  blank lines between documents), files in sorted order per pattern.

  Raises:
    ValueError: a pattern matches no file.
  """
  documents = [[]]
  for pattern in patterns:
    paths = sorted(tf.io.gfile.glob(pattern))
    if not paths:
      raise ValueError(f"no text file matches {pattern!r}")
    for path in paths:
      with tf.io.gfile.GFile(path, "r") as f:
        for line in f:
          line = line.strip()
          if line:
            documents[-1].append(line)
          elif documents[-1]:
            documents.append([])
      if documents[-1]:
        documents.append([])
  return [d for d in documents if d]


def tfds_documents(name: str, split: str = "train", feature: str = "text",
                   data_dir: str = None, download: bool = False,
                   max_documents: int = None) -> List[Document]:
  """Documents of a TFDS text dataset: each example's `feature` string, split
  into sentences.

  Raises:
    ValueError: the dataset is unknown, or not prepared and `download` is False,
      or has no string feature `feature`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = sources.tfds_builder(name, data_dir, features=[feature],
                                 need_prepared=not download)
  if not builder.is_prepared():
    builder.download_and_prepare()
  dataset = builder.as_dataset(split=split)
  if max_documents:
    dataset = dataset.take(max_documents)
  documents = [split_sentences(example[feature].decode("utf-8"))
               for example in tfds.as_numpy(dataset)]
  return [d for d in documents if d]


def parse_corpus_spec(spec: str) -> Tuple[str, List[str]]:
  """(kind, arguments) of a corpus spec: ("python_manual", []),
  ("files", patterns) or ("tfds", [name, split, feature]).

  Raises:
    ValueError: not a corpus spec.
  """
  kind, _, rest = spec.partition(":")
  if spec == "python_manual":
    return kind, []
  if kind == "files" and any(rest.split(",")):
    return kind, [p for p in rest.split(",") if p]
  if kind == "tfds" and rest and len(rest.split(":")) <= 3:
    return kind, (rest.split(":") + ["train", "text"][len(rest.split(":")) - 1:])[:3]
  raise ValueError(f"corpus must be 'python_manual', 'files:PATTERN[,...]' or "
                   f"'tfds:NAME[:SPLIT[:FEATURE]]', got {spec!r}")


def load_corpus(spec: str, tfds_data_dir: str = None) -> List[Document]:
  """The documents a corpus spec names (module docstring).

  Raises:
    ValueError: an invalid spec, or a source that cannot be read.
  """
  kind, arguments = parse_corpus_spec(spec)
  if kind == "python_manual":
    return python_manual_documents()
  if kind == "files":
    return read_text_files(arguments)
  return tfds_documents(*arguments, data_dir=tfds_data_dir)


def split_documents(documents: Sequence[Document], validation_fraction: float,
                    seed: int) -> Tuple[List[Document], List[Document]]:
  """(train, validation): a seeded shuffle of whole documents, the last
  `validation_fraction` of them (at least 2, for next-sentence pairs) held out.

  Raises:
    ValueError: fewer than 4 documents, or a fraction outside (0, 0.5].
  """
  if not 0.0 < validation_fraction <= 0.5:
    raise ValueError(f"validation_fraction must be in (0, 0.5], got {validation_fraction}")
  if len(documents) < 4:
    raise ValueError(f"need at least 4 documents to split, got {len(documents)}")
  order = list(range(len(documents)))
  random.Random(seed).shuffle(order)
  held_out = max(2, int(round(len(documents) * validation_fraction)))
  shuffled = [documents[i] for i in order]
  return shuffled[:-held_out], shuffled[-held_out:]


# ---------------------------------------------------------------- WordPiece / BERT
def build_wordpiece_vocab(documents: Sequence[Document], vocab_size: int,
                          lower_case: bool = True) -> List[str]:
  """A WordPiece vocabulary of at most `vocab_size` tokens learned from
  `documents` by tensorflow-text (BERT's word splitting, then the WordPiece
  learner); `RESERVED_TOKENS` first, so [PAD] is id 0."""
  if vocab_size <= len(RESERVED_TOKENS):
    raise ValueError(f"vocab_size must exceed {len(RESERVED_TOKENS)}, got {vocab_size}")
  sentences = tf.data.Dataset.from_tensor_slices(
      [s for document in documents for s in document]).batch(1024)
  return bert_vocab_from_dataset.bert_vocab_from_dataset(
      sentences, vocab_size=vocab_size, reserved_tokens=list(RESERVED_TOKENS),
      bert_tokenizer_params={"lower_case": lower_case})


def write_vocab(vocab: Sequence[str], path: str) -> None:
  """One token a line (the id is the line number)."""
  write_bytes("".join(token + "\n" for token in vocab).encode("utf-8"), path)


def read_vocab(path: str) -> List[str]:
  """The tokens of a vocabulary file, in id order."""
  with tf.io.gfile.GFile(path, "r") as f:
    return [line.rstrip("\n") for line in f]


def bert_tokenizer(vocab_path: str, lower_case: bool = True) -> tf_text.BertTokenizer:
  """tensorflow-text's BertTokenizer over a vocabulary file (ids = line numbers)."""
  return tf_text.BertTokenizer(vocab_path, lower_case=lower_case,
                               token_out_type=tf.int64, unknown_token="[UNK]")


def tokenize_documents(documents: Sequence[Document], tokenizer: tf_text.BertTokenizer,
                       vocab: Sequence[str]) -> List[List[List[str]]]:
  """WordPieces of every sentence: [document][sentence][piece] strings.
  Sentences with no piece (e.g. only white space after normalization) drop out."""
  sentences = [s for document in documents for s in document]
  ids = tokenizer.tokenize(tf.constant(sentences)).merge_dims(1, 2)  # [S, (pieces)]
  pieces = [[vocab[i] for i in row] for row in ids.to_list()]
  out, start = [], 0
  for document in documents:
    out.append([p for p in pieces[start:start + len(document)] if p])
    start += len(document)
  return out


@dataclasses.dataclass(frozen=True)
class BertDataSpec:
  """How raw text becomes BERT pre-training examples (official's meanings).

  Attributes:
    vocab_size: the most WordPiece tokens to learn (the encoder's vocab_size).
    seq_length: tokens per example ([CLS] A [SEP] B [SEP], padded).
    max_predictions_per_seq: the most masked positions per example.
    masked_lm_prob: fraction of tokens to mask (80% [MASK], 10% random, 10% kept).
    short_seq_prob: probability of a shorter target length.
    dupe_factor: passes over the documents, each with new masks and pairs.
    whole_word_mask: mask all pieces of a word together.
    lower_case: lower-case and strip accents before WordPiece.
    use_v2_feature_names: input_word_ids/input_type_ids instead of
      input_ids/segment_ids.
    validation_fraction: share of documents held out for validation.
    seed: seed of the document split, pairing and masking.
  """
  vocab_size: int = 512
  seq_length: int = 64
  max_predictions_per_seq: int = 10
  masked_lm_prob: float = 0.15
  short_seq_prob: float = 0.1
  dupe_factor: int = 2
  whole_word_mask: bool = False
  lower_case: bool = True
  use_v2_feature_names: bool = False
  validation_fraction: float = 0.1
  seed: int = 12345

  def validate(self) -> None:
    """Raises ValueError naming every invalid field."""
    problems = []
    if self.vocab_size <= len(RESERVED_TOKENS):
      problems.append(f"vocab_size must exceed {len(RESERVED_TOKENS)}")
    if self.seq_length < 8:
      problems.append("seq_length must be at least 8")
    if not 1 <= self.max_predictions_per_seq <= self.seq_length:
      problems.append("max_predictions_per_seq must be in [1, seq_length]")
    if not 0.0 < self.masked_lm_prob < 1.0:
      problems.append("masked_lm_prob must be in (0, 1)")
    if not 0.0 <= self.short_seq_prob <= 1.0:
      problems.append("short_seq_prob must be in [0, 1]")
    if self.dupe_factor < 1:
      problems.append("dupe_factor must be at least 1")
    if not 0.0 < self.validation_fraction <= 0.5:
      problems.append("validation_fraction must be in (0, 0.5]")
    if problems:
      raise ValueError("invalid BERT data spec: " + "; ".join(problems))


class _VocabIds:
  """The one tokenizer method official's example writer calls."""

  def __init__(self, vocab: Sequence[str]):
    self._ids = {token: i for i, token in enumerate(vocab)}

  def convert_tokens_to_ids(self, tokens):
    return [self._ids[t] for t in tokens]


def _instances(documents, spec: BertDataSpec, vocab, rng):
  """Official's training instances over tokenized documents: `dupe_factor`
  passes of `create_instances_from_document`, shuffled (as official's
  `create_training_instances` does after its own file reading)."""
  documents = [d for d in documents if d]
  rng.shuffle(documents)
  replacements = [t for t in vocab if t not in RESERVED_TOKENS]
  instances = []
  for _ in range(spec.dupe_factor):
    for index in range(len(documents)):
      instances.extend(create_pretraining_data.create_instances_from_document(
          documents, index, spec.seq_length, spec.short_seq_prob, spec.masked_lm_prob,
          spec.max_predictions_per_seq, replacements, rng, spec.whole_word_mask))
  rng.shuffle(instances)
  return instances


METADATA = "metadata.json"
VOCAB = "vocab.txt"
TRAIN_RECORDS = "train.tfrecord"
VALIDATION_RECORDS = "validation.tfrecord"


def corpus_fingerprint(documents: Sequence[Document]) -> str:
  """sha256 of the documents (sentence and document boundaries included)."""
  digest = hashlib.sha256()
  for document in documents:
    for sentence in document:
      digest.update(sentence.encode("utf-8") + b"\n")
    digest.update(b"\n")
  return digest.hexdigest()


def check_vocab(vocab: Sequence[str], vocab_size: int) -> None:
  """Raises ValueError unless `vocab` fits BERT data: [PAD] first, the other
  reserved tokens present, at most `vocab_size` tokens, no duplicates."""
  if not vocab or vocab[0] != "[PAD]":
    raise ValueError("the vocabulary's first token (id 0, official's padding) must be [PAD]")
  missing = [t for t in RESERVED_TOKENS if t not in vocab]
  if missing:
    raise ValueError(f"the vocabulary lacks {missing}")
  if len(set(vocab)) != len(vocab):
    raise ValueError("the vocabulary has duplicate tokens")
  if len(vocab) > vocab_size:
    raise ValueError(f"the vocabulary has {len(vocab)} tokens, more than the model's "
                     f"vocab_size {vocab_size}")


def write_bert_pretraining_data(documents: Sequence[Document], output_dir: str,
                                spec: BertDataSpec, source: str = "",
                                vocab: Sequence[str] = None) -> dict:
  """Writes `vocab.txt`, `train.tfrecord`, `validation.tfrecord` and
  `metadata.json` (spec, source, corpus fingerprint, example counts) to
  `output_dir`; returns the metadata. The vocabulary is `vocab` if given (e.g.
  BERT's released one), else learned from the training documents only.

  If `output_dir` already holds data made from the same documents, vocabulary
  and spec, it is reused as it is (the output is a deterministic function of
  them).
  """
  spec.validate()
  if vocab is not None:
    check_vocab(vocab, spec.vocab_size)
  metadata = {"format": "mnemosyne_tf.bert_pretraining_data", "version": 1,
              "source": source, "corpus_sha256": corpus_fingerprint(documents),
              "given_vocab_sha256": (None if vocab is None
                                     else corpus_fingerprint([vocab])),
              "spec": dataclasses.asdict(spec)}
  existing = reusable_metadata(output_dir, metadata)
  if existing:
    return existing
  remove_metadata(output_dir)
  train_docs, validation_docs = split_documents(documents, spec.validation_fraction,
                                                spec.seed)
  if vocab is None:
    vocab = build_wordpiece_vocab(train_docs, spec.vocab_size, spec.lower_case)
  vocab_path = os.path.join(output_dir, VOCAB)
  write_vocab(vocab, vocab_path)
  tokenizer = bert_tokenizer(vocab_path, spec.lower_case)
  rng = random.Random(spec.seed)
  counts = {}
  for name, docs in ((TRAIN_RECORDS, train_docs), (VALIDATION_RECORDS, validation_docs)):
    instances = _instances(tokenize_documents(docs, tokenizer, vocab), spec, vocab, rng)
    path = os.path.join(output_dir, name)
    temporary = _temporary_path(path)
    create_pretraining_data.write_instance_to_example_files(
        instances, _VocabIds(vocab), spec.seq_length, spec.max_predictions_per_seq,
        [temporary], gzip_compress=False, use_v2_feature_names=spec.use_v2_feature_names)
    tf.io.gfile.rename(temporary, path, overwrite=True)
    counts[name] = len(instances)
  metadata.update(vocab_size=len(vocab), examples=counts,
                  documents={TRAIN_RECORDS: len(train_docs),
                             VALIDATION_RECORDS: len(validation_docs)})
  write_metadata(metadata, output_dir)
  return metadata


# ---------------------------------------------------------------- prepared directories
# A prepared directory holds its files and METADATA, written last: its presence
# marks a complete directory, and its content says what the files are a
# function of, so that a run with the same inputs reuses them.
def read_metadata(output_dir: str) -> dict:
  """METADATA of a prepared directory, or {} if there is none."""
  path = os.path.join(output_dir, METADATA)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path, "r") as f:
    return json.load(f)


def reusable_metadata(output_dir: str, inputs: dict) -> dict:
  """The METADATA of `output_dir` if it was prepared from `inputs` (every key
  of `inputs` has the same value there), else {}."""
  existing = read_metadata(output_dir)
  return existing if existing and all(existing.get(k) == v for k, v in inputs.items()) else {}


def remove_metadata(output_dir: str) -> None:
  """Marks `output_dir` incomplete before its files are rewritten (a run that
  fails half-way must not leave the old METADATA describing new files)."""
  path = os.path.join(output_dir, METADATA)
  if tf.io.gfile.exists(path):
    tf.io.gfile.remove(path)


def write_metadata(metadata: dict, output_dir: str) -> None:
  """Writes METADATA (last, after every file it describes)."""
  write_bytes(json.dumps(metadata, indent=1, sort_keys=True).encode("utf-8"),
              os.path.join(output_dir, METADATA))


# ---------------------------------------------------------------- text-to-text / T5
# Word-level string tasks on sentences of a corpus: input = `words` consecutive
# words, target = the task's function of them.
TEXT_TO_TEXT_TASKS = {
    "copy": lambda words: words,
    "reverse_words": lambda words: words[::-1],
}
TEXT_FEATURES = ("inputs", "targets")


def text_to_text_pairs(documents: Sequence[Document], task: str, words: int,
                       prefix: str = "") -> List[Tuple[str, str]]:
  """(input, target) strings: every run of `words` consecutive words (split at
  white space, runs not overlapping, within one sentence) and the task's output,
  the input preceded by `prefix` (e.g. "reverse_words: ").

  Raises:
    ValueError: an unknown task or words < 1.
  """
  if task not in TEXT_TO_TEXT_TASKS:
    raise ValueError(f"task must be one of {sorted(TEXT_TO_TEXT_TASKS)}, got {task!r}")
  if words < 1:
    raise ValueError(f"words must be at least 1, got {words}")
  function = TEXT_TO_TEXT_TASKS[task]
  pairs = []
  for document in documents:
    for sentence in document:
      tokens = sentence.split()
      for start in range(0, len(tokens) - words + 1, words):
        run = tokens[start:start + words]
        pairs.append((prefix + " ".join(run), " ".join(function(run))))
  return pairs


def write_text_pairs(pairs: Sequence[Tuple[str, str]], path: str) -> None:
  """A TFRecord of tf.Examples with string features "inputs" and "targets"
  (written through a temporary file)."""
  temporary = _temporary_path(path)
  with tf.io.TFRecordWriter(temporary) as writer:
    for pair in pairs:
      example = tf.train.Example(features=tf.train.Features(feature={
          name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")]))
          for name, text in zip(TEXT_FEATURES, pair)}))
      writer.write(example.SerializeToString())
  tf.io.gfile.rename(temporary, path, overwrite=True)


# ---------------------------------------------------------------- SentencePiece
def train_sentencepiece(documents: Sequence[Document], vocab_size: int,
                        model_type: str = "unigram") -> bytes:
  """A serialized SentencePiece model learned from the sentences of
  `documents`, with T5's ids (pad 0, eos 1, unk 2, no bos). Deterministic:
  single-threaded, sentences in the given order, no sampling."""
  import sentencepiece  # pylint: disable=g-import-not-at-top
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter([s for document in documents for s in document]),
      model_writer=model, vocab_size=vocab_size, model_type=model_type,
      pad_id=T5_PAD_ID, eos_id=T5_EOS_ID, unk_id=T5_UNK_ID, bos_id=-1,
      num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
      minloglevel=2)
  return model.getvalue()


def sentencepiece_tokenizer(model: bytes, add_eos: bool = False
                            ) -> tf_text.SentencepieceTokenizer:
  """tensorflow-text's tokenizer over a serialized SentencePiece model."""
  return tf_text.SentencepieceTokenizer(model=model, add_eos=add_eos,
                                        out_type=tf.int32)


def read_bytes(path: str) -> bytes:
  """A file's bytes (local or GCS), with a clear error if it is missing."""
  if not tf.io.gfile.exists(path):
    raise ValueError(f"file not found: {path!r}")
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def write_bytes(data: bytes, path: str) -> None:
  """Writes `data` to `path` through a temporary file (never a partial file)."""
  temporary = _temporary_path(path)
  with tf.io.gfile.GFile(temporary, "wb") as f:
    f.write(data)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def _temporary_path(path: str) -> str:
  """A name beside `path` that no other writer uses (its directory is made):
  concurrent writers of the same file (several workers preparing the same
  data) each rename a complete file into place."""
  tf.io.gfile.makedirs(os.path.dirname(path) or ".")
  return f"{path}.tmp-{uuid.uuid4().hex}"
