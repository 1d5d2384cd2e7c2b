"""manifest.json: what an export directory contains, and the loader/validator the edge runtime uses.

The manifest is written LAST and atomically (temp file, fsync, rename): a directory without one is an
unfinished or rejected export and every loader refuses it. Format (``format_version`` 1)::

    {
      "format": "egovlm-export", "format_version": 1, "created_utc": "...",
      "target": "cpu", "runtime": "onnxruntime" | "tensorrt", "precision": "fp32|fp16|int8|int4|fp8",
      "contract_version": 1,                      # egovlm.contract.CONTRACT_VERSION at export time
      "keyframe_size": [w, h],
      "model": {ModelDims: hidden_size, num_layers, num_kv_heads, head_dim, vocab_size, image_token_id,
                image_grid_thw, tokens_per_keyframe, eos_token_ids, ...; "source": path},
      "versions": {"egovlm", "torch", "transformers", "onnx", "onnxruntime", "modelopt"?},
      "graphs": {"vision"|"embed"|"decoder": {"file", "precision", "inputs": [{name, shape, dtype}],
                 "outputs": [...], "external_data": [...], "export_seconds"}},
      "processor_dir": "processor",
      "files": {"relative/path": {"sha256": hex, "bytes": n}, ...},   # every file the export ships
      "parity": {"report": "report.json", "passed": true, "summary": {...}},
      "tensorrt": {"status": "pending-device" | "built", "build_command": "...", "profiles": {...},
                   "engines": {"vision": "engines/vision.plan", ...}} | null,
      "edgellm": {...} | null
    }

Shapes hold ints for fixed dimensions and names (``batch``, ``seq``, ``past``, ``total``) for dynamic
ones; ``total = past + seq``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from egovlm.atomic import atomic_write_text

MANIFEST = "manifest.json"
FORMAT = "egovlm-export"
FORMAT_VERSION = 1


class ManifestError(RuntimeError):
    """A missing, incomplete, tampered or incompatible export; the message names the file and field."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_table(root: Path, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, dict[str, Any]]:
    """sha256 and size of every regular file under ``root`` (hidden staging files excluded)."""
    table: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel in exclude or any(part.startswith(".") for part in Path(rel).parts):
            continue
        table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produced the export (import-light: metadata only)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for dist in ("egovlm", "torch", "transformers", "onnx", "onnxruntime", "nvidia-modelopt", "tensorrt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_manifest(root: Path, body: dict[str, Any]) -> Path:
    """Hash every file under ``root`` and write the manifest atomically. Call this last."""
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **body,
        "files": file_table(root),
    }
    path = root / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


@dataclass
class Manifest:
    root: Path
    data: dict[str, Any]

    @property
    def target(self) -> str:
        return str(self.data["target"])

    @property
    def runtime(self) -> str:
        return str(self.data["runtime"])

    @property
    def precision(self) -> str:
        return str(self.data["precision"])

    @property
    def contract_version(self) -> int:
        return int(self.data["contract_version"])

    @property
    def keyframe_size(self) -> tuple[int, int]:
        w, h = self.data["keyframe_size"]
        return int(w), int(h)

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.data["model"])

    def graph(self, name: str) -> dict[str, Any]:
        graphs = self.data["graphs"]
        if name not in graphs:
            raise ManifestError(f"{self.root / MANIFEST}: no graph {name!r} (has {', '.join(graphs)})")
        return dict(graphs[name])

    def graph_path(self, name: str) -> Path:
        return self.root / self.graph(name)["file"]

    @property
    def processor_dir(self) -> Path:
        return self.root / self.data["processor_dir"]

    def engine_path(self, name: str) -> Path | None:
        trt = self.data.get("tensorrt") or {}
        engines = trt.get("engines") or {}
        return self.root / engines[name] if name in engines else None


_REQUIRED = (
    "target",
    "runtime",
    "precision",
    "contract_version",
    "keyframe_size",
    "model",
    "graphs",
    "processor_dir",
    "files",
    "versions",
)


def load_manifest(root: Path | str, verify: bool = True, contract_version: int | None = None) -> Manifest:
    """Load and validate an export. ``verify`` re-hashes every listed file (the runtime should; it takes
    about a second per GB). ``contract_version``: refuse an export made for another prompt contract."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise ManifestError(f"export folder not found: {root}")
    if not path.is_file():
        raise ManifestError(
            f"{root} has no {MANIFEST}: the export is unfinished, was interrupted or failed its parity "
            "check (see report.md there, if any)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if data.get("format") != FORMAT:
        raise ManifestError(f"{path}: field 'format' is {data.get('format')!r}, expected {FORMAT!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: field 'format_version' is {data.get('format_version')!r}; "
            f"this loader reads {FORMAT_VERSION}"
        )
    for key in _REQUIRED:
        if key not in data:
            raise ManifestError(f"{path}: missing field {key!r}")
    if contract_version is not None and int(data["contract_version"]) != contract_version:
        raise ManifestError(
            f"{path}: exported for prompt contract v{data['contract_version']}, this runtime speaks "
            f"v{contract_version}; re-export the model"
        )
    manifest = Manifest(root=root, data=data)
    for name, graph in data["graphs"].items():
        for rel in [graph["file"], *graph.get("external_data", [])]:
            if rel not in data["files"]:
                raise ManifestError(f"{path}: graph {name!r} file {rel!r} is not listed under 'files'")
    if verify:
        verify_files(manifest)
    return manifest


def verify_files(manifest: Manifest) -> None:
    """Every file listed in the manifest exists with its recorded size and sha256."""
    for rel, entry in manifest.data["files"].items():
        path = manifest.root / rel
        if not path.is_file():
            raise ManifestError(f"{manifest.root / MANIFEST}: listed file {rel} is missing")
        if path.stat().st_size != entry["bytes"]:
            raise ManifestError(
                f"{path}: size {path.stat().st_size} differs from the manifest's {entry['bytes']} (modified?)"
            )
        if sha256_file(path) != entry["sha256"]:
            raise ManifestError(f"{path}: sha256 differs from the manifest (modified or corrupted)")
