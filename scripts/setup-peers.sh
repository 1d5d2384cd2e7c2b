#!/usr/bin/env bash
# The peer runtimes of `egovlm bench peers` (issue 26) in their own venv, so the main venv and
# `make test` stay lean and the peers may pin their own transformers:
#   llama-cpp-python (built from its sdist with CMake: llama.cpp + mtmd, CPU; 14 min on 2 cores),
#   OpenVINO GenAI + optimum-intel (the `optimum-cli export openvino` exporter),
#   ONNX Runtime GenAI (its model builder runs in this venv too).
# llama.cpp's own converter (convert_hf_to_gguf.py + gguf-py) is not on PyPI: it ships inside
# llama-cpp-python's sdist (vendor/llama.cpp), which this script unpacks next to the venv.
#
#   bash scripts/setup-peers.sh [VENV]        # default .venv-peers; a second run only re-checks
set -euo pipefail

VENV=${1:-.venv-peers}
PY=${PEERS_PYTHON:-python3.11}
STAMP="$VENV/.peers-installed"
LLAMA_CPP_PYTHON=0.3.36
# transformers 4.57.6: llama.cpp's converter pins it and optimum-intel 2.2.0 exports Qwen2.5-VL only
# under transformers <= 5.0 (the benchmark hands both a transformers-4 view of the checkpoint,
# egovlm.benchmarks.peers.transformers4_view). torch/torchvision: the main venv's pair (a CPU-only torch
# wheel breaks PyPI's torchvision: "operator torchvision::nms does not exist"). onnx-ir: imported by
# onnxruntime-genai's model builder but not declared by it.
PINS=(
  "llama-cpp-python==$LLAMA_CPP_PYTHON"
  "openvino==2026.4.1" "openvino-tokenizers==2026.4.1" "openvino-genai==2026.4.1"
  "optimum-intel==2.2.0" "optimum==2.3.0" "nncf==3.4.0"
  "onnxruntime-genai==0.18.0" "onnxruntime>=1.31" "onnx>=1.17"
  "transformers==4.57.6" "torch==2.14.1" "torchvision==0.29.1" "onnx-ir>=0.1"
  "numpy>=1.26,<2.5" "pillow>=10" "safetensors>=0.4" "sentencepiece>=0.2" "protobuf>=4.21"
)

if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "${PINS[*]}" ]]; then
  echo "peers venv $VENV is up to date"
  touch "$STAMP"  # newer than this script: make's target is satisfied
  exit 0
fi
command -v "$PY" >/dev/null || PY=$(ls "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.11*/bin/python3.11 | tail -1)
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade "pip>=24" 2>&1 | grep -v "^WARNING: Location" || true
# CPU-only llama.cpp; GGML_NATIVE stays on (this machine's ISA) as llama.cpp's default build does.
set -o pipefail
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_CUDA=OFF}" "$VENV/bin/pip" install -q "${PINS[@]}" 2>&1 | { grep -v "^WARNING: Location" || true; }

# llama.cpp's converter from the same sdist (the vendored llama.cpp the wheel was built from).
SRC="$VENV/llama.cpp-src"
if [[ ! -f "$SRC/convert_hf_to_gguf.py" ]]; then
  TMP=$(mktemp -d)
  "$VENV/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON" -d "$TMP" 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
  tar -xzf "$TMP"/llama_cpp_python-*.tar.gz -C "$TMP"
  rm -rf "$SRC"
  mv "$TMP"/llama_cpp_python-*/vendor/llama.cpp "$SRC"
  rm -rf "$TMP"
fi
# gguf-py from the same tree (the converter imports it; the PyPI gguf may lag the converter).
"$VENV/bin/pip" install -q --no-deps -e "$SRC/gguf-py" 2>&1 | { grep -v "^WARNING: Location" || true; }
# ONNX Runtime GenAI's model builder imports transformers 5 classes, which optimum-intel refuses: the
# benchmark runs the builder with the main venv's Python (transformers 5, onnxruntime, onnx-ir) and this
# copy of the package on its PYTHONPATH.
"$VENV/bin/pip" install -q --no-deps --upgrade --target "$VENV/ortgenai-main" "onnxruntime-genai==0.18.0" 2>&1 \
  | { grep -v "^WARNING: Location" || true; }
"$VENV/bin/python" -c "import llama_cpp, openvino_genai, onnxruntime_genai, optimum.intel, gguf; print('peers ok:', llama_cpp.__version__, openvino_genai.__version__, onnxruntime_genai.__version__)"
echo "${PINS[*]}" > "$STAMP"
