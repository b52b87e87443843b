# Mnemosyne-TF. `make demo` and `make test` set everything up on a fresh
# machine: a .venv with the pinned stack, and Bazel from Debian's packages.

PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BAZEL_FLAGS := --python_path=$(CURDIR)/$(PY)

.PHONY: setup demo test pytest bazel-test bazel-setup bench-quick bench bench-overhead \
        hand-set-weights smoke-pipelines clean

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

# The whole test suite: every test file is a Bazel py_test (`make pytest` runs
# the same files under pytest, for a quick local loop).
test: setup bazel-test

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

# Every pipeline experiment's tiny config for a few steps on CPU, training then
# evaluation (ViT fine-tuning starts from a short pre-training run). Output in
# runs/smoke; a few minutes in all.
SMOKE_DIR := runs/smoke
SMOKE_STEPS := 20
SMOKE_OVERRIDE := trainer.train_steps=$(SMOKE_STEPS),trainer.steps_per_loop=10,trainer.summary_interval=10,trainer.checkpoint_interval=$(SMOKE_STEPS),trainer.validation_interval=$(SMOKE_STEPS)
PIPELINES := bert_pretraining t5_prompt_tuning vit_finetuning

smoke-pipelines: setup
	rm -rf $(SMOKE_DIR)
	$(PY) -m pipelines.train --experiment=mnemosyne/vit_finetuning --mode=train \
	  --config_file=configs/experiments/vit_finetuning_tiny_pretrain.yaml \
	  --params_override=$(SMOKE_OVERRIDE) --model_dir=$(SMOKE_DIR)/vit_pretrain
	set -e; for exp in $(PIPELINES); do \
	  extra=""; [ $$exp != vit_finetuning ] || extra=",task.init_checkpoint=$(SMOKE_DIR)/vit_pretrain"; \
	  echo "== smoke: mnemosyne/$$exp"; \
	  $(PY) -m pipelines.train --experiment=mnemosyne/$$exp --mode=train_and_eval \
	    --config_file=configs/experiments/$${exp}_tiny.yaml \
	    --params_override=$(SMOKE_OVERRIDE)$$extra --model_dir=$(SMOKE_DIR)/$$exp; \
	done
	@echo "== smoke-pipelines: every experiment trained and evaluated ($(SMOKE_DIR))"

clean:
	-bazel clean 2>/dev/null
	rm -rf demo_output
