"""Per-tensor step-size adaptation by the normalized hypergradient (optional).

A learned rule's step size is calibrated once, on the meta-training tasks, but
the best step differs between problems: tuned Adam's learning rate ranges over
3e-3 .. 0.1 on our benchmarks (coordinate_v2.md, attempt 14). This stage lets
every tensor adjust its step online, from the one signal a too-small or
too-large step leaves in the next gradient: whether the last move still points
downhill. With d_{t-1} the rule's previous direction (its update is -d times a
positive scale) and g_t the new gradient,

    c_t = <g_t, d_{t-1}> / (|g_t| |d_{t-1}|)              in [-1, 1]
    l_t = clip(l_{t-1} + rate * c_t, -bound, bound),      l_0 = 0

and the step is multiplied by exp(l_t). c_t > 0 (the gradient still agrees with
the last move) grows the step; c_t < 0 (the move overshot) shrinks it. This is
the multiplicative, normalized form of hypergradient descent on the learning
rate (Baydin et al., "Online Learning Rate Adaptation with Hypergradient
Descent", ICLR 2018: the derivative of the loss in log step size is
-<g_t, u_{t-1}>). c_t is scale-free, so `rate` means the same for every tensor
and problem, and it is even in the gradient (negating the whole gradient
history negates both g and d), so an odd rule stays odd.

The state lives in the per-coordinate layout (every leaf [P]): the previous
direction, and l repeated in every coordinate (its first entry is read).
"""

from typing import NamedTuple

import tensorflow as tf


class AdaptationState(NamedTuple):
  """previous_direction: [P] the rule's last direction (zeros before the
  first step, which makes c_1 = 0); log_gain: [P] l, the same in every entry."""
  previous_direction: tf.Tensor
  log_gain: tf.Tensor


def init(size: int) -> AdaptationState:
  return AdaptationState(tf.zeros([size], tf.float32), tf.zeros([size], tf.float32))


def check_config(rate, bound, owner: str) -> None:
  """ValueError unless 0 <= rate <= 1 and 0 < bound <= 10 (finite floats)."""
  for name, value, low, high, low_open in (("step_adaptation_rate", rate, 0.0, 1.0, False),
                                           ("step_adaptation_bound", bound, 0.0, 10.0, True)):
    if (isinstance(value, bool) or not isinstance(value, (int, float))
        or not (low < value if low_open else low <= value) or not value <= high):
      raise ValueError(f"{owner}.{name} must be a float in "
                       f"{'(' if low_open else '['}{low:g}, {high:g}], got {value!r}")


def agreement(grad: tf.Tensor, previous_direction: tf.Tensor) -> tf.Tensor:
  """c = cos(g, d) over the tensor (flat [P] each); 0 if either is zero."""
  dot = tf.reduce_sum(grad * previous_direction)
  norms = tf.norm(grad) * tf.norm(previous_direction)
  return tf.math.divide_no_nan(dot, norms)


def adapt(state: AdaptationState, grad: tf.Tensor, rate: float, bound: float) -> tf.Tensor:
  """l_t (a scalar) from the state before this step and g_t (flat [P])."""
  previous = tf.reduce_sum(state.log_gain[:1])  # 0 for an empty tensor
  return tf.clip_by_value(previous + rate * agreement(grad, state.previous_direction),
                          -bound, bound)


def next_state(direction: tf.Tensor, log_gain: tf.Tensor) -> AdaptationState:
  """The state after a step with this (flat [P]) direction and l_t."""
  return AdaptationState(direction, tf.fill(tf.shape(direction), log_gain))
