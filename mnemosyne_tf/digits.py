"""scikit-learn's bundled 8x8 handwritten digits (offline) and a small CNN for them.

1,797 images that install with scikit-learn: real data with no download.
"""

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def load_split(seed: int = 0):
  """(x_train, y_train, x_test, y_test): digits as [N, 8, 8, 1] floats in [0, 1]."""
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
  x_train, x_test, y_train, y_test = train_test_split(
      x, y.astype(np.int32), test_size=0.2, random_state=seed, stratify=y)
  return x_train, y_train, x_test, y_test


def build_cnn():
  """The demo's small CNN for [8, 8, 1] digits (10 logits)."""
  return keras.Sequential([
      keras.Input((8, 8, 1)),
      keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
      keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
      keras.layers.MaxPooling2D(2),
      keras.layers.Flatten(),
      keras.layers.Dense(64, activation="relu"),
      keras.layers.Dense(10),
  ], name="digits_cnn")
