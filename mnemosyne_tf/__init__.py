"""Mnemosyne-TF: the Mnemosyne learned optimizer for TensorFlow and Keras."""

from mnemosyne_tf.optimizer import LearnedOptimizer, Mnemosyne
from mnemosyne_tf.weights import DEFAULT_WEIGHTS, SHIPPED, WeightsError, load_weights

__version__ = "0.1.0"

__all__ = ["LearnedOptimizer", "Mnemosyne", "DEFAULT_WEIGHTS", "SHIPPED", "WeightsError", "load_weights"]
