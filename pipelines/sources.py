"""Checks of what a pipeline reads: file patterns, checkpoints, TFDS datasets.

Every pipeline checks its inputs when its task is made, before anything is
written; these are the checks they share, each with a message naming the path
or dataset.
"""

from typing import List, Optional, Sequence

import tensorflow as tf


def unmatched_patterns(input_path: str) -> List[str]:
  """The comma-separated glob patterns of `input_path` that match no file."""
  return [p for p in str(input_path).split(",") if p and not tf.io.gfile.glob(p)]


def checkpoint_prefix(path: str) -> Optional[str]:
  """The checkpoint file prefix `path` names: `path` itself if `path.index`
  exists, a directory's latest checkpoint, or None if there is none."""
  if tf.io.gfile.isdir(path):
    return tf.train.latest_checkpoint(path)
  return path if tf.io.gfile.exists(path + ".index") else None


def tfds_builder(name: str, data_dir: Optional[str] = None, features: Sequence[str] = (),
                 need_prepared: bool = True):
  """The TFDS builder of `name`, checked: it has `features` and (if
  `need_prepared`) its data is prepared in `data_dir` ("" or None: TFDS's
  default directory).

  Raises:
    ValueError: the name is unknown, a feature is missing, or the data is not
      prepared.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow)
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # tfds raises several types for an unknown name
    raise ValueError(f"unknown TFDS dataset {name!r}: {e}") from e
  missing = [f for f in features if f not in builder.info.features]
  if missing:
    raise ValueError(f"TFDS dataset {name!r} has no feature {missing}; it has "
                     f"{sorted(builder.info.features)}")
  if need_prepared and not builder.is_prepared():
    raise ValueError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r}; "
                     "prepare it there first (downloading needs the internet)")
  return builder
