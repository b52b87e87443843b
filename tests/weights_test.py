"""Tests of the weights file format and the shipped weights."""

import json
import os
import re

import numpy as np
import tensorflow as tf

import mnemosyne_tf
from mnemosyne_tf import rule as rule_lib
from mnemosyne_tf import weights as weights_lib
from mnemosyne_tf.core import network
from mnemosyne_tf.meta import config as config_lib
from mnemosyne_tf.weights import file_format
from mnemosyne_tf.weights import make_hand_set

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_hand_set(path, **config_overrides):
  config = network.CoordinateConfig(**config_overrides)
  theta = network.CoordinateWiseNetwork(config).hand_set_theta()
  return file_format.save(path, "coordinate", config.to_dict(),
                          {k: v.numpy() for k, v in theta.items()}, {"kind": "test"})


class WeightsFileTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path
    self.path = os.path.join(self.dir, "w.npz")
    self.sha = write_hand_set(self.path)

  def test_round_trip(self):
    loaded = file_format.load(self.path)
    self.assertEqual(loaded.sha256, self.sha)
    self.assertEqual(loaded.network, "coordinate")
    self.assertEqual(loaded.config, network.CoordinateConfig().to_dict())
    theta = network.CoordinateWiseNetwork(network.CoordinateConfig()).hand_set_theta()
    self.assertEqual(set(loaded.theta), set(theta))
    for name, value in theta.items():
      self.assertAllEqual(loaded.theta[name], value)

  def test_truncated_file_is_named_and_explained(self):
    data = open(self.path, "rb").read()
    bad = os.path.join(self.dir, "truncated.npz")
    with open(bad, "wb") as f:
      f.write(data[: len(data) // 2])
    with self.assertRaisesRegex(file_format.WeightsError, "truncated.npz.*truncated or corrupt"):
      file_format.load(bad)

  def test_flipped_byte_is_detected(self):
    data = bytearray(open(self.path, "rb").read())
    data[len(data) // 3] ^= 0xFF
    bad = os.path.join(self.dir, "flipped.npz")
    with open(bad, "wb") as f:
      f.write(bytes(data))
    with self.assertRaisesRegex(file_format.WeightsError, "flipped.npz"):
      file_format.load(bad)

  def _rewrite(self, name, header_edit=None, theta_edit=None):
    with np.load(self.path) as archive:
      payload = {k: archive[k] for k in archive.files}
    header = json.loads(payload["__header__"].tobytes())
    if header_edit:
      header_edit(header)
    if theta_edit:
      theta_edit(payload)
    payload["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    path = os.path.join(self.dir, name)
    np.savez(path, **payload)
    return path

  def test_checksum_mismatch(self):
    def edit(payload):
      payload["head__b2"] = payload["head__b2"] + 1.0
    path = self._rewrite("edited.npz", theta_edit=edit)
    with self.assertRaisesRegex(file_format.WeightsError, "edited.npz.*checksum"):
      file_format.load(path)

  def test_unknown_version(self):
    path = self._rewrite("v9.npz", header_edit=lambda h: h.update(version=9))
    with self.assertRaisesRegex(file_format.WeightsError, "v9.npz.*version 9"):
      file_format.load(path)

  def test_not_a_weights_file(self):
    path = os.path.join(self.dir, "plain.npz")
    np.savez(path, a=np.zeros(3))
    with self.assertRaisesRegex(file_format.WeightsError, "plain.npz.*no header"):
      file_format.load(path)
    with self.assertRaisesRegex(file_format.WeightsError, "does not exist"):
      file_format.load(os.path.join(self.dir, "missing.npz"))

  def test_config_mismatch_is_refused_by_the_optimizer(self):
    def edit(header):
      header["config"]["hidden_dim"] = 8
    path = self._rewrite("mismatch.npz", header_edit=edit)
    with self.assertRaisesRegex(mnemosyne_tf.WeightsError,
                                "mismatch.npz.*does not match.*head/w1"):
      mnemosyne_tf.Mnemosyne(weights=path)

  def test_invalid_config_in_file_is_refused(self):
    def edit(header):
      header["config"]["num_features"] = 3
    path = self._rewrite("badconfig.npz", header_edit=edit)
    with self.assertRaisesRegex(mnemosyne_tf.WeightsError, "badconfig.npz.*even"):
      mnemosyne_tf.Mnemosyne(weights=path)

  def test_a_user_weights_file_is_used(self):
    path = os.path.join(self.dir, "small.npz")
    write_hand_set(path, hidden_dim=4, num_heads=1)
    opt = mnemosyne_tf.Mnemosyne(weights=path)
    self.assertEqual(opt.state_floats_per_parameter, 1 + 1 * (4 * 2 + 4 + 1))

  def test_save_is_atomic_and_leaves_no_temp_files(self):
    write_hand_set(self.path)
    self.assertEqual(os.listdir(self.dir), ["w.npz"])


class ShippedWeightsTest(tf.test.TestCase):

  def test_every_shipped_file_loads_and_fits_its_network(self):
    for name in weights_lib.SHIPPED:
      loaded = weights_lib.load_weights(name)
      self.assertIn(loaded.provenance["kind"], ("hand_set", "meta_trained"))
      rule_lib.build_network(loaded.network, loaded.config).check_theta(loaded.theta)
      self.assertTrue(os.path.exists(os.path.splitext(loaded.path)[0] + ".md"),
                      msg=f"{name} has no card")
      if loaded.provenance["kind"] == "meta_trained":
        # Made by our binary from a config committed in this repository.
        command = loaded.provenance["command"]
        self.assertTrue(command.startswith("python -m mnemosyne_tf.meta.train "), command)
        config_path = re.search(r"--config=(\S+)", command).group(1)
        self.assertEqual(
            config_lib.MetaTrainConfig.from_dict(loaded.provenance["meta_config"]),
            config_lib.MetaTrainConfig.from_yaml(os.path.join(_ROOT, config_path)), msg=name)
        self.assertEqual(loaded.provenance["meta_steps_done"],
                         loaded.provenance["meta_config"]["meta_steps"], msg=name)

  def test_hand_set_file_equals_what_its_generator_writes(self):
    config, theta, provenance = make_hand_set.hand_set_weights()
    loaded = weights_lib.load_weights("hand_set_v0")
    # The same config (fields added since the file was written take their
    # defaults, which keep the rule it had).
    self.assertEqual(network.CoordinateConfig.from_dict(loaded.config),
                     network.CoordinateConfig.from_dict(config))
    self.assertEqual(loaded.provenance, provenance)
    self.assertEqual(loaded.sha256, file_format.checksum(theta))
    self.assertIn("NOT META-TRAINED", loaded.provenance["description"])

  def test_unknown_name_is_a_clear_error(self):
    with self.assertRaisesRegex(ValueError, "unknown weights 'nope'"):
      weights_lib.resolve("nope")


if __name__ == "__main__":
  tf.test.main()
