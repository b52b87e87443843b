"""Weights shipped inside the package, and loading them by name or path.

`SHIPPED` maps each name to its file in this folder; each file has a card
(`<name>.md`) saying how it was made. `DEFAULT_WEIGHTS` is what `Mnemosyne()`
loads with no arguments; `DEFAULT_WEIGHTS_BY_MODE`, what `Mnemosyne(mode=...)`
loads.
"""

import os

from mnemosyne_tf.weights.file_format import Weights, WeightsError, load, save

_HERE = os.path.dirname(os.path.abspath(__file__))

# name -> file in this folder
SHIPPED = {
    # Not meta-trained: a hand-set theta that is normalized momentum
    # (see hand_set_v0.md); the starting point of meta-training.
    "hand_set_v0": "hand_set_v0.npz",
    # Meta-trained by `python -m mnemosyne_tf.meta.train` from
    # configs/meta/coordinate.yaml (see coordinate_v1.md).
    "coordinate_v1": "coordinate_v1.npz",
    # Second version, from configs/meta/coordinate_v2.yaml (see
    # coordinate_v2.md, which also records every attempt): the default until
    # attempt 15.
    "coordinate_v2": "coordinate_v2.npz",
    # Tenth attempt, from configs/meta/coordinate_v10.yaml (see
    # coordinate_v10.md): second-order meta-gradient, Adam-like direction,
    # step calibrated by rank against Adam's grid. Better than coordinate_v2 on
    # two of the held-out bar's three counts (one LSTM cell fewer); not the
    # default: late in training it collapsed on two of three seeds of the
    # quality benchmark's CNN.
    "coordinate_v10": "coordinate_v10.npz",
    # Fourteenth attempt, from configs/meta/coordinate_v14.yaml (see
    # coordinate_v14.md): odd in the gradient, second-order meta-gradient,
    # step calibrated with a 4x stability margin. It trains the quality
    # benchmark's masked LM better than tuned Adam and its ViT nearly as well; on the held-out
    # bar it is within one grid point of tuned Adam in 3 cells of 12 and beats
    # the LSTM in 5.
    "coordinate_v14": "coordinate_v14.npz",
    # Fifteenth attempt, from configs/meta/coordinate_v15.yaml (see
    # coordinate_v15.md): attempt 14's arrays with the per-tensor step
    # adaptation (core/step_adaptation.py) and a recalibrated step. The
    # default until attempt 24.
    "coordinate_v15": "coordinate_v15.npz",
    # Sixteenth attempt, from configs/meta/coordinate_v16.yaml (see
    # coordinate_v16.md): attempt 14's arrays meta-trained 250 more steps
    # with the step adaptation on, then recalibrated. Better than v15 on the
    # held-out MLPs and CNNs; not the default: it stalls on the character LM.
    "coordinate_v16": "coordinate_v16.npz",
    # The default: twenty-fourth attempt, from configs/meta/coordinate_v24.yaml
    # (see coordinate_v24.md): coordinate_v15's arrays, step and adaptation,
    # with each step of an attention projection (rank-3 kernel) bounded
    # relative to the kernel. Models without rank-3 tensors train exactly as
    # with coordinate_v15.
    "coordinate_v24": "coordinate_v24.npz",
    # The LSTM baseline (Andrychowicz et al.), meta-trained by the same binary
    # from configs/meta/lstm.yaml (see lstm_v1.md). Load it with
    # LearnedOptimizer(weights="lstm_v1").
    "lstm_v1": "lstm_v1.npz",
    # Tensor-wise Mnemosyne (HPE + CAM + SPE), from configs/meta/tensor_v1.yaml
    # (see tensor_v1.md): the default of Mnemosyne(mode="tensor").
    "tensor_v1": "tensor_v1.npz",
    # Super-Mnemosyne (tensor-wise below 1,024 coordinates, coordinate-wise
    # from there), from configs/meta/super_v1.yaml (see super_v1.md): the
    # default of Mnemosyne(mode="super").
    "super_v1": "super_v1.npz",
}
DEFAULT_WEIGHTS = "coordinate_v24"
DEFAULT_WEIGHTS_BY_MODE = {"coordinate": DEFAULT_WEIGHTS, "tensor": "tensor_v1",
                           "super": "super_v1"}


def resolve(name_or_path: str) -> str:
  """Path of a shipped weights name, or `name_or_path` itself if it is a path."""
  if not isinstance(name_or_path, str) or not name_or_path:
    raise ValueError(f"weights must be a shipped name {sorted(SHIPPED)} or a file "
                     f"path, got {name_or_path!r}")
  if name_or_path in SHIPPED:
    return os.path.join(_HERE, SHIPPED[name_or_path])
  if os.path.sep in name_or_path or name_or_path.endswith(".npz"):
    return name_or_path
  raise ValueError(f"unknown weights {name_or_path!r}: not a shipped name "
                   f"{sorted(SHIPPED)} and not a path to a .npz file")


def load_weights(name_or_path: str = DEFAULT_WEIGHTS) -> Weights:
  """Loads and verifies shipped or user weights (raises WeightsError)."""
  return load(resolve(name_or_path))


__all__ = ["SHIPPED", "DEFAULT_WEIGHTS", "DEFAULT_WEIGHTS_BY_MODE", "Weights", "WeightsError", "load",
           "load_weights", "resolve", "save"]
