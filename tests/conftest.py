"""pytest set-up: two logical CPUs before TensorFlow initializes (for the
MirroredStrategy tests, which also run alone under Bazel)."""

from tests import testing

testing.use_logical_cpus(2)
