#!/usr/bin/env bash
# TensorRT's Python bindings of each release the API-surface test reads
# (tests/export/test_trt_api_surface.py), fetched once at set-up (`make setup`), never at test time.
#
# Usage: bash scripts/fetch-trt-bindings.sh [CACHE_DIR]     (default .cache/trt-bindings)
#
# Each release's bindings are a real wheel on PyPI holding only `tensorrt_bindings/tensorrt.so` and its
# `__init__.py` (1-2 MB; `import tensorrt` needs NVIDIA's libnvinfer, absent here, but the .so's string
# table names every class, method and enum of that release). For each release this writes
# CACHE_DIR/<release>/tensorrt.so, __init__.py (its __version__) and SOURCE (the wheel and its sha256).
# Idempotent: a release already fetched is skipped; a failed fetch leaves nothing half-written.
set -euo pipefail

CACHE="${1:-.cache/trt-bindings}"
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# release dir  requirement                           python  role (the test reads this table)
RELEASES=(
    "8.6.1     tensorrt-bindings==8.6.1              3.10    refused"    # JetPack 6.0 (L4T 36.3)
    "10.3.0    tensorrt-cu12-bindings==10.3.0        3.10    supported"  # JetPack 6.1/6.2, the floor
    "10.13.3   tensorrt-cu12-bindings==10.13.3.9     3.12    supported"  # JetPack 7.0/7.1
    "10.16.1   tensorrt-cu13-bindings==10.16.1.11    3.12    supported"  # JetPack 7.2 ships 10.16.2
    "11.4.0    tensorrt-cu12-bindings==11.4.0.106    3.12    supported"  # newest (desktop GPUs)
)

mkdir -p "$CACHE"
for row in "${RELEASES[@]}"; do
    read -r release requirement python _role <<<"$row"
    dest="$CACHE/$release"
    if [ -s "$dest/tensorrt.so" ] && [ -s "$dest/__init__.py" ] && [ -s "$dest/SOURCE" ]; then
        continue
    fi
    work="$(mktemp -d "$CACHE/.fetch-$release.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    # Only x86_64 wheels exist for every release (the string table is the same API on aarch64).
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$python" \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        -d "$work/wheel" "$requirement" 2>&1 | { grep -v "^WARNING: Location" || true; }
    wheel="$(ls "$work"/wheel/*.whl)"
    "$PYTHON" - "$wheel" "$work/out" <<'EOF'
import hashlib, sys, zipfile
from pathlib import Path

wheel, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir()
with zipfile.ZipFile(wheel) as z:
    for name in ("tensorrt.so", "__init__.py"):
        (out / name).write_bytes(z.read(f"tensorrt_bindings/{name}"))
digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
(out / "SOURCE").write_text(f"{wheel.name} sha256={digest}\n")
EOF
    rm -rf "$dest"
    mv "$work/out" "$dest"
    rm -rf "$work"
    trap - EXIT
    echo "fetched TensorRT $release bindings: $(cat "$dest/SOURCE")"
done
