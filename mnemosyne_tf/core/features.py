"""Per-coordinate gradient features: the tokens the CAM remembers.

Three features per coordinate, all bounded:

  * second-moment normalized gradient g / (sqrt(v_hat) + eps), with v the
    exponential moving average of g^2 (rate beta2) and v_hat = v / (1 - beta2^t)
    its bias correction (the RMSProp/Adam normalization; scale-free, in
    [-1/sqrt(1-beta2), 1/sqrt(1-beta2)] and exactly +/-1 at t = 1);
  * the Andrychowicz et al. (2016, Sec. 3.2 / App. A) log-magnitude and sign
    preprocessing with parameter k:
        log_magnitude = clip(log(|g| + eps) / k, -1, 1)
        sign          = clip(g * exp(k), -1, 1)
"""

import math

import tensorflow as tf

NUM_FEATURES = 3
# How each feature responds when the gradient's sign flips (its whole history):
# -1 it flips too (odd), +1 it stays (even). In the order of `gradient_features`.
PARITY = (-1.0, 1.0, -1.0)
# Gradients are clipped to +/- this before featurization so that g^2 (and the
# second moment) stays finite in float32; it changes no feature below it.
MAX_ABS_GRADIENT = 1e15


def sqrt_zero_safe(x: tf.Tensor) -> tf.Tensor:
  """sqrt(x) for x >= 0 (0 where x is not positive), whose gradient at x = 0
  is 0 instead of infinite.

  The values are tf.sqrt's exactly; only the gradient at 0 changes. It matters
  to the second-order meta-gradient: with v = EMA(g^2), a gradient g small
  enough that g^2 underflows to 0 (|g| below about 1e-18) but not 0 itself
  makes d sqrt(v) / dv infinite while dv / dg is not 0, and inf times a finite
  number turns the whole meta-gradient non-finite (found in attempt 20's run:
  the CNN task's meta-gradient was dropped at 14 of 250 meta-steps)."""
  positive = x > 0.0
  return tf.where(positive, tf.sqrt(tf.where(positive, x, tf.ones_like(x))),
                  tf.zeros_like(x))


def update_second_moment(second_moment: tf.Tensor, grad: tf.Tensor,
                         beta2: float) -> tf.Tensor:
  """v_t = beta2 v_{t-1} + (1 - beta2) g_t^2 (same shape as grad)."""
  return beta2 * second_moment + (1.0 - beta2) * tf.square(grad)


def normalized_gradient(grad: tf.Tensor, second_moment: tf.Tensor, step,
                        beta2: float, eps: float = 1e-8) -> tf.Tensor:
  """g / (sqrt(v_t / (1 - beta2^t)) + eps); `step` t counts from 1."""
  step = tf.cast(step, grad.dtype)
  bias_correction = 1.0 - tf.pow(tf.constant(beta2, grad.dtype), step)
  return grad / (sqrt_zero_safe(second_moment / bias_correction) + eps)


def log_sign_preprocessing(grad: tf.Tensor, k: float = 5.0, eps: float = 1e-20):
  """Andrychowicz et al. preprocessing: (log_magnitude, sign), each in [-1, 1]."""
  log_magnitude = tf.clip_by_value(tf.math.log(tf.abs(grad) + eps) / k, -1.0, 1.0)
  sign = tf.clip_by_value(grad * math.exp(k), -1.0, 1.0)
  return log_magnitude, sign


def gradient_features(grad: tf.Tensor, second_moment: tf.Tensor, step,
                      beta2: float, k: float = 5.0) -> tf.Tensor:
  """Stacks the features of every coordinate: [...] -> [NUM_FEATURES, ...]
  (feature axis first, the layout of the rest of core/).

  `second_moment` must already include this step's gradient
  (`update_second_moment`).
  """
  log_magnitude, sign = log_sign_preprocessing(grad, k)
  return tf.stack(
      [normalized_gradient(grad, second_moment, step, beta2), log_magnitude, sign],
      axis=0)
