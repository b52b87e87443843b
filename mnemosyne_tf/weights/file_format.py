"""The Mnemosyne weights file: theta, its network config, a version, a checksum.

A weights file is an uncompressed NumPy .npz archive (loaded with
allow_pickle=False) holding one float32 array per theta entry and a JSON header:

    {"format": "mnemosyne_tf.weights", "version": 1,
     "network": "coordinate", "config": {...CoordinateConfig...},
     "provenance": {"kind": "hand_set" | "meta_trained", ...free-form...},
     "sha256": hex digest of the arrays (names, dtypes, shapes and bytes)}

Loading checks, in order, and raises `WeightsError` (a ValueError) naming the file
and the problem: readable archive (not truncated or corrupt), header present and
of a known format and version, checksum equal, config valid, theta entries and
shapes matching the config.
"""

import dataclasses
import hashlib
import json
import os
import zipfile
from typing import Dict

import numpy as np

FORMAT = "mnemosyne_tf.weights"
VERSION = 1
_HEADER = "__header__"
_SEP = "__"  # theta names use "/", stored as "__" inside the archive


class WeightsError(ValueError):
  """A weights file that cannot be used; the message names file and problem."""


@dataclasses.dataclass(frozen=True)
class Weights:
  """A loaded weights file."""
  network: str
  config: dict
  theta: Dict[str, np.ndarray]
  provenance: dict
  sha256: str
  path: str = ""


def checksum(theta: Dict[str, np.ndarray]) -> str:
  """sha256 over every entry's name, dtype, shape and bytes, in name order."""
  digest = hashlib.sha256()
  for name in sorted(theta):
    array = np.ascontiguousarray(theta[name])
    digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def save(path: str, network: str, config: dict, theta, provenance: dict) -> str:
  """Writes a weights file atomically (temp file + rename); returns its sha256."""
  arrays = {name: np.asarray(value, dtype=np.float32) for name, value in theta.items()}
  for name in arrays:
    if _SEP in name or name == _HEADER:
      raise ValueError(f"theta name {name!r} may not contain {_SEP!r}")
  header = {"format": FORMAT, "version": VERSION, "network": network,
            "config": config, "provenance": provenance, "sha256": checksum(arrays)}
  payload = {name.replace("/", _SEP): value for name, value in arrays.items()}
  payload[_HEADER] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    np.savez(f, **payload)
  os.replace(tmp, path)
  return header["sha256"]


def load(path: str) -> Weights:
  """Reads and verifies a weights file (see the module docstring)."""
  if not os.path.isfile(path):
    raise WeightsError(f"weights file {path!r} does not exist")
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {key: archive[key] for key in archive.files}
  except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
    raise WeightsError(f"weights file {path!r} is truncated or corrupt "
                       f"(not a readable .npz archive): {e}") from e
  if _HEADER not in arrays:
    raise WeightsError(f"weights file {path!r} has no header: not a Mnemosyne "
                       "weights file")
  try:
    header = json.loads(arrays.pop(_HEADER).tobytes().decode())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise WeightsError(f"weights file {path!r} has an unreadable header: {e}") from e
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    raise WeightsError(f"weights file {path!r} is not a {FORMAT} file")
  if header.get("version") != VERSION:
    raise WeightsError(f"weights file {path!r} has format version "
                       f"{header.get('version')!r}; this library reads version {VERSION}")
  theta = {key.replace(_SEP, "/"): value for key, value in arrays.items()}
  digest = checksum(theta)
  if digest != header.get("sha256"):
    raise WeightsError(f"weights file {path!r} fails its checksum (stored "
                       f"{header.get('sha256')!r}, computed {digest!r}): the file "
                       "is corrupt or was edited")
  return Weights(network=header.get("network"), config=header.get("config"),
                 theta=theta, provenance=header.get("provenance", {}),
                 sha256=digest, path=path)
