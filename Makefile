# Mnemosyne-TF. `make demo` and `make test` set everything up on a fresh
# machine: a .venv with the pinned stack, and Bazel from Debian's packages.

PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BAZEL_FLAGS := --python_path=$(CURDIR)/$(PY)

.PHONY: setup demo test pytest bazel-test bazel-setup bench-quick bench bench-overhead \
        hand-set-weights clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "== setting up $(VENV) with the pinned stack (first time: ~2 minutes)"
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# The main job: a real CNN on real digits, Mnemosyne vs Adam(1e-3).
demo: setup
	$(PY) -m mnemosyne_tf.demo --out_dir=demo_output

# The whole test suite: every Bazel py_test, then pytest over the same files.
test: setup bazel-test pytest

pytest: setup
	$(PY) -m pytest tests

bazel-test: setup bazel-setup
	bazel test //... $(BAZEL_FLAGS)

bazel-setup:
	@if ! command -v bazel >/dev/null || [ ! -d /usr/share/bazel/rules/java ]; then \
	  echo "== installing Bazel (Debian bazel-bootstrap, bazel-rules-java)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq bazel-bootstrap bazel-rules-java; \
	fi

# Quality against Adam/RMSProp/SGD-momentum over learning-rate grids and the LSTM
# optimizer, side by side in one run (results in benchmarks/results/).
bench-quick: setup
	$(PY) -m benchmarks.quality --quick

bench: setup
	$(PY) -m benchmarks.quality

# Step time and state size against Adam, side by side in one process.
bench-overhead: setup
	$(PY) -m benchmarks.overhead

# Regenerates the shipped hand-set weights (tests check the file matches).
hand-set-weights: setup
	$(PY) -m mnemosyne_tf.weights.make_hand_set

clean:
	-bazel clean 2>/dev/null
	rm -rf demo_output
