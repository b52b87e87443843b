"""Shared test helpers (tiny models, offline data, logical devices, commands run in-process)."""

import contextlib
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl.testing import flagsaver  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def use_logical_cpus(count: int = 2) -> int:
  """Splits the CPU into `count` logical devices if TF is not initialized yet.

  Returns how many logical CPUs exist (callers skip if it is fewer than needed).
  """
  cpus = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
  except RuntimeError:
    pass  # the runtime is already initialized: keep what it has
  return len(tf.config.list_logical_devices("CPU"))


def digits(num: int = 512, seed: int = 0, flat: bool = True):
  """(x, y): `num` of scikit-learn's bundled 8x8 digits, scaled to [0, 1]."""
  from sklearn.datasets import load_digits
  x, y = load_digits(return_X_y=True)
  order = np.random.RandomState(seed).permutation(len(x))[:num]
  x = (x[order] / 16.0).astype(np.float32)
  if not flat:
    x = x.reshape(-1, 8, 8, 1)
  return x, y[order].astype(np.int32)


def tiny_mlp(seed: int = 0, hidden: int = 16, dtype=None):
  import keras
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((64,)),
      keras.layers.Dense(hidden, activation="relu", dtype=dtype),
      keras.layers.Dense(10, dtype=dtype),
  ])


def random_gradients(shape, steps: int, seed: int = 0):
  """A gradient stream whose scale varies over 4 orders of magnitude."""
  rng = np.random.RandomState(seed)
  scales = 10.0 ** rng.uniform(-3, 1, size=steps)
  return [np.asarray(s * rng.randn(*shape), np.float32) for s in scales]


def run_main(main, **flag_values):
  """Runs an absl command's `main` in this process with these flag values:
  (what it printed, the SystemExit it raised or None)."""
  stdout = io.StringIO()
  with flagsaver.flagsaver(**flag_values), contextlib.redirect_stdout(stdout):
    try:
      main(["main"])
    except SystemExit as exited:
      return stdout.getvalue(), exited
  return stdout.getvalue(), None
