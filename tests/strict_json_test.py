"""strict_json: non-finite floats become None or their name; nothing else changes."""

import json
import math

import numpy as np
import tensorflow as tf

from mnemosyne_tf import strict_json


class StrictJsonTest(tf.test.TestCase):

  def test_non_finite_floats_become_none_or_their_name(self):
    record = {"a": [float("nan"), 1.5, (float("inf"), -math.inf)], 2.0: np.float32("nan"),
              "n": 3, "s": "x", "z": None, "f": np.float64(0.25)}
    self.assertEqual(strict_json.strict(record),
                     {"a": [None, 1.5, [None, None]], "2.0": None, "n": 3, "s": "x",
                      "z": None, "f": 0.25})
    named = strict_json.strict(record, non_finite_as_string=True)
    self.assertEqual(named["a"], ["nan", 1.5, ["inf", "-inf"]])
    self.assertEqual(named["2.0"], "nan")
    for out in (strict_json.strict(record), named):
      json.dumps(out, allow_nan=False)  # raises on NaN/Inf
    with self.assertRaises(ValueError):
      json.dumps(record, allow_nan=False)
    self.assertIsInstance(strict_json.strict(np.float32(0.5)), float)


if __name__ == "__main__":
  tf.test.main()
