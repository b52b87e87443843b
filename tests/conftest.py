"""pytest set-up.

* Two logical CPUs before TensorFlow initializes (for the MirroredStrategy
  tests, which also run alone under Bazel).
* absl flags marked parsed, as `tf.test.main()` would do, so absltest helpers
  such as `create_tempdir` work under pytest.
"""

from absl import flags

from tests import testing

testing.use_logical_cpus(2)
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


def pytest_collection_modifyitems(config, items):
  """Drops tf.test.TestCase's inherited `test_session` (a context manager that
  unittest would report as a skipped test, not one of ours)."""
  del config
  items[:] = [item for item in items if item.name != "test_session"]
