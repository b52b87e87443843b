"""Helpers of the language-pipeline tests: a small offline corpus, text
normalization as BERT's tokenizer does it, and training losses of a run."""

import os
import re
import unicodedata

from pipelines import figures
from pipelines import text_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_corpus(directory: str, topics: int = 16) -> str:
  """Writes the first `topics` documents of the Python manual in official's
  raw-text format (a sentence a line, blank lines between documents) to
  directory/corpus.txt; returns the corpus spec "files:<path>"."""
  path = os.path.join(directory, "corpus.txt")
  documents = text_data.python_manual_documents()[:topics]
  with open(path, "w") as f:
    f.write("\n\n".join("\n".join(document) for document in documents) + "\n")
  return "files:" + path


def normalize(text: str) -> str:
  """What BERT's uncased tokenizer keeps of `text`, white space removed:
  NFD, accents (combining marks) dropped, lower case."""
  text = unicodedata.normalize("NFD", text)
  text = "".join(c for c in text if unicodedata.category(c) != "Mn")
  return re.sub(r"\s+", "", text.lower())


def training_losses(model_dir: str):
  """[(step, training loss)] of a pipelines.train run, from its summaries."""
  return figures.read_scalars(os.path.join(model_dir, "train"))["training_loss"]
