"""Records that strict JSON accepts (`json.dump(..., allow_nan=False)`).

NaN and Inf are not JSON. The benchmarks and the meta-trainer record diverged
runs, so their records hold them; this is the one place that says what they
become.
"""

import math

import numpy as np


def strict(value, non_finite_as_string: bool = False):
  """A copy of `value` (nested dicts, lists, tuples, scalars) in which every
  non-finite float becomes None, or with `non_finite_as_string` its name
  ("nan", "inf", "-inf"); mapping keys become strings, numpy floats Python
  floats."""
  if isinstance(value, (float, np.floating)):
    value = float(value)
    if math.isfinite(value):
      return value
    return str(value) if non_finite_as_string else None
  if isinstance(value, dict):
    return {str(k): strict(v, non_finite_as_string) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict(v, non_finite_as_string) for v in value]
  return value
