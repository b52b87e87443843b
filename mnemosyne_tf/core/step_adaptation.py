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


# Fixed-point scale of `exact_sum`: terms in [-1, 1] become integers in
# [-2^30, 2^30]; an int64 sum holds 2^33 of them.
_FIXED_POINT = 2.0 ** 30


def exact_sum(terms: tf.Tensor) -> tf.Tensor:
  """The sum of `terms` (flat, each in [-1, 1]) rounded to multiples of 2^-30,
  as float32, computed in int64 so that its value does not depend on the order
  of the additions (nor on the kernel that does them). c feeds the gain, which
  accumulates every last bit of it, so runs from one seed drift apart from the
  first difference. Made after two identical 40-step runs differed from step 5
  on; it did not remove every such difference (README, "Reproducibility": the
  remaining cause is elsewhere in graph-mode TF). No float64 (TPUs have
  none): the int64 total is rounded to float32 once, then scaled by a power
  of two, which is exact."""
  fixed = tf.cast(tf.round(terms * _FIXED_POINT), tf.int64)
  return tf.cast(tf.reduce_sum(fixed), tf.float32) * (1.0 / _FIXED_POINT)


def agreement(grad: tf.Tensor, previous_direction: tf.Tensor) -> tf.Tensor:
  """c = cos(g, d) over the tensor (flat [P] each); 0 if either is zero.

  Each vector is first divided by its largest magnitude (a max is exact in any
  order), so that every product lies in [-1, 1] and the sums are `exact_sum`s;
  their rounding (at most P * 2^-31 each, while |g|^2 and |d|^2 are >= 1 after
  the division) changes c by at most about P * 1e-9."""
  def unit_max(x):
    return tf.math.divide_no_nan(x, tf.reduce_max(tf.abs(x)))
  g, d = unit_max(grad), unit_max(previous_direction)
  norms = tf.sqrt(exact_sum(g * g) * exact_sum(d * d))
  return tf.math.divide_no_nan(exact_sum(g * d), norms)


def adapt(state: AdaptationState, grad: tf.Tensor, rate: float, bound: float) -> tf.Tensor:
  """l_t (a scalar) from the state before this step and g_t (flat [P])."""
  previous = tf.reduce_sum(state.log_gain[:1])  # 0 for an empty tensor
  return tf.clip_by_value(previous + rate * agreement(grad, state.previous_direction),
                          -bound, bound)


def next_state(direction: tf.Tensor, log_gain: tf.Tensor) -> AdaptationState:
  """The state after a step with this (flat [P]) direction and l_t."""
  return AdaptationState(direction, tf.fill(tf.shape(direction), log_gain))
