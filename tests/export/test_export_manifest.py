"""The manifest: written last with hashes; the loader refuses missing, tampered or foreign exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egovlm.export.manifest import MANIFEST, ManifestError, load_manifest, write_manifest


def _export(root: Path) -> Path:
    (root / "processor").mkdir(parents=True)
    (root / "decoder.onnx").write_bytes(b"graph-bytes")
    (root / "processor" / "tokenizer.json").write_text("{}")
    (root / ".staging-leftover").write_text("ignored")
    body = {
        "target": "cpu",
        "runtime": "onnxruntime",
        "precision": "int8",
        "contract_version": 1,
        "keyframe_size": [112, 84],
        "model": {"num_layers": 2},
        "versions": {"torch": "x"},
        "graphs": {"decoder": {"file": "decoder.onnx", "external_data": []}},
        "processor_dir": "processor",
    }
    return write_manifest(root, body)


def test_roundtrip_lists_every_file_with_hashes(tmp_path: Path) -> None:
    path = _export(tmp_path)
    data = json.loads(path.read_text())
    assert set(data["files"]) == {"decoder.onnx", "processor/tokenizer.json"}
    m = load_manifest(tmp_path, contract_version=1)
    assert m.precision == "int8" and m.keyframe_size == (112, 84)
    assert m.graph_path("decoder") == tmp_path / "decoder.onnx"
    with pytest.raises(ManifestError, match="no graph 'vision'"):
        m.graph("vision")


def test_tampered_or_missing_files_are_refused(tmp_path: Path) -> None:
    _export(tmp_path)
    (tmp_path / "decoder.onnx").write_bytes(b"graph-bytez")  # same size, other content
    with pytest.raises(ManifestError, match="sha256 differs"):
        load_manifest(tmp_path)
    load_manifest(tmp_path, verify=False)  # structure alone is still fine
    (tmp_path / "decoder.onnx").write_bytes(b"graph-bytes")
    load_manifest(tmp_path)
    (tmp_path / "processor" / "tokenizer.json").unlink()
    with pytest.raises(ManifestError, match="tokenizer.json is missing"):
        load_manifest(tmp_path, verify=True)


def test_no_manifest_means_unfinished(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="export folder not found"):
        load_manifest(tmp_path / "absent")
    with pytest.raises(ManifestError, match="unfinished, was interrupted or failed"):
        load_manifest(tmp_path)


def test_contract_and_format_mismatches(tmp_path: Path) -> None:
    path = _export(tmp_path)
    with pytest.raises(ManifestError, match="prompt contract v1.*v2"):
        load_manifest(tmp_path, contract_version=2)
    data = json.loads(path.read_text())
    del data["graphs"]
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="missing field 'graphs'"):
        load_manifest(tmp_path)
    path.write_text("{not json")
    with pytest.raises(ManifestError, match=f"{MANIFEST}: not valid JSON"):
        load_manifest(tmp_path)
