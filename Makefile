# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each installs what it needs first (Debian packages, a venv in .venv, pinned Python
# packages, the native build); a second run only re-checks.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := train,export,edge,voice,dev
STAMP := $(VENV)/.egovlm-installed

.PHONY: setup demo test test-slow lint typecheck clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt CMakeLists.txt native/descriptor.cpp scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/pip install -q -c constraints.txt scikit-build-core nanobind 2>&1 | grep -v "^WARNING: Location" || true
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]" 2>&1 | { grep -v "^WARNING: Location" || true; }
	# PySceneDetect (a keyframe-benchmark baseline) without its deps: they would pull opencv-python
	# beside opencv-python-headless, and both provide cv2. Its other deps are already installed.
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt --no-deps "scenedetect==0.7.2" platformdirs 2>&1 | { grep -v "^WARNING: Location" || true; }
	touch $(STAMP)

demo: setup
	$(BIN)/egovlm demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy egovlm train export edge benchmarks scripts

test: setup lint typecheck
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf build $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The miniature EgoVLM experiment (docs/mini_experiment/README.md): EgoSynth data, the base stage,
# GRPO arms (a) and (b) x 3 seeds, evals and the results table, on CPU (time of the last run in the docs).
.PHONY: repro-mini
repro-mini: setup
	$(BIN)/python scripts/repro_mini.py --fresh
