"""Tests of tpu.strategy: the strategy rule and building strategies."""

import json
import os
from unittest import mock

from absl.testing import parameterized
import tensorflow as tf

from tests import testing

testing.use_logical_cpus(2)

from tpu import strategy  # noqa: E402

_TWO_WORKERS = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                           "task": {"type": "worker", "index": 0}})


class ChooseTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("nothing_is_the_default_strategy", {}, "default"),
      ("one_gpu_is_the_default_strategy", dict(num_gpus=1), "default"),
      ("several_gpus_mirror", dict(num_gpus=4), "mirrored"),
      ("tf_config_is_multi_worker", dict(tf_config=_TWO_WORKERS, num_gpus=4),
       "multi_worker_mirrored"),
      ("a_tpu_wins", dict(tpu="my-tpu", tf_config=_TWO_WORKERS, num_gpus=4), "tpu"),
      ("local_tpu", dict(tpu="local"), "tpu"),
      ("tf_config_without_cluster", dict(tf_config='{"task": {}}'), "default"),
      ("empty_tpu_is_no_tpu", dict(tpu=""), "default"),
      ("one_task_cluster_allows_mirrored",
       dict(requested="mirrored", tf_config=json.dumps({"cluster": {"chief": ["a:1"]}})),
       "mirrored"),
      ("explicit_mirrored_on_cpus", dict(requested="mirrored"), "mirrored"),
      ("explicit_default_despite_gpus", dict(requested="default", num_gpus=8), "default"),
  )
  def test_rule(self, kwargs, expected):
    self.assertEqual(strategy.choose(**kwargs), expected)

  @parameterized.named_parameters(
      ("unknown_name", dict(requested="ring"), "must be one of"),
      ("tpu_without_address", dict(requested="tpu"), "needs --tpu"),
      ("multi_worker_without_tf_config", dict(requested="multi_worker_mirrored"),
       "needs TF_CONFIG"),
      ("tf_config_not_json", dict(tf_config="{cluster"), "TF_CONFIG is not valid JSON"),
      ("parameter_servers", dict(tf_config=json.dumps({"cluster": {"ps": ["a:1"],
                                                                   "worker": ["b:1"]}})),
       r"task types \['ps'\]"),
      ("tpu_given_to_mirrored", dict(requested="mirrored", tpu="my-tpu"),
       "--tpu=my-tpu is given but the distribution strategy is 'mirrored'"),
      ("cluster_given_to_one_worker", dict(requested="mirrored", tf_config=_TWO_WORKERS),
       "cluster of 2 tasks but the distribution strategy 'mirrored' trains on one worker"),
  )
  def test_errors_name_the_problem(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      strategy.choose(**kwargs)


class CreateTest(tf.test.TestCase):

  def test_default(self):
    self.assertIs(strategy.create("default"), tf.distribute.get_strategy())

  def test_mirrored_spans_the_logical_cpus(self):
    if testing.use_logical_cpus(2) < 2:
      self.skipTest("needs two logical CPUs")
    mirrored = strategy.create("mirrored")
    self.assertIsInstance(mirrored, tf.distribute.MirroredStrategy)
    self.assertEqual(mirrored.num_replicas_in_sync, 2)

  def test_one_device(self):
    one = strategy.create("one_device")
    self.assertIsInstance(one, tf.distribute.OneDeviceStrategy)
    self.assertEqual(one.num_replicas_in_sync, 1)

  def test_resolve_without_devices_or_cluster(self):
    with mock.patch.dict(os.environ):
      os.environ.pop("TF_CONFIG", None)
      name, resolved = strategy.resolve()
    self.assertEqual(name, "default")
    self.assertEqual(resolved.num_replicas_in_sync, 1)


if __name__ == "__main__":
  tf.test.main()
