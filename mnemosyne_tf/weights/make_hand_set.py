"""Writes the shipped hand-set weights: `python -m mnemosyne_tf.weights.make_hand_set`.

The hand-set theta is NOT meta-trained: it is `CoordinateWiseNetwork.hand_set_theta`
(normalized momentum; see hand_set_v0.md for how its two constants were chosen).
tests/weights_test.py checks that the shipped file equals what this writes.
"""

import os

from absl import app
from absl import flags

from mnemosyne_tf import weights as weights_lib
from mnemosyne_tf.core import network

MOMENTUM = 0.9
STEP_SIZE = 1e-3


def hand_set_weights():
  """(config dict, theta, provenance) of hand_set_v0."""
  config = network.CoordinateConfig()
  theta = network.CoordinateWiseNetwork(config).hand_set_theta(MOMENTUM, STEP_SIZE)
  provenance = {
      "kind": "hand_set",
      "description": "HAND-SET, NOT META-TRAINED: normalized momentum "
                     f"(momentum={MOMENTUM}, step_size={STEP_SIZE}) expressed as "
                     "coordinate-wise Mnemosyne weights",
      "command": "python -m mnemosyne_tf.weights.make_hand_set",
  }
  return config.to_dict(), {k: v.numpy() for k, v in theta.items()}, provenance


def define_flags():
  """Defines this binary's flags (only when it runs as a binary)."""
  flags.DEFINE_string(
      "out", weights_lib.resolve("hand_set_v0"), "Where to write the weights file.")

def main(argv):
  del argv
  config, theta, provenance = hand_set_weights()
  digest = weights_lib.save(flags.FLAGS.out, "coordinate", config, theta, provenance)
  print(f"wrote {os.path.abspath(flags.FLAGS.out)} (sha256 {digest})")


if __name__ == "__main__":
  define_flags()
  app.run(main)
