"""TensorRT path without TensorRT: profile sizing from the memory budget, profile shapes, the honest
"not here" status, and the build/manifest flow against a recording stand-in for the tensorrt module
(the real build awaits a device)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from egovlm.export import tensorrt_build as tb
from egovlm.export.manifest import load_manifest, write_manifest
from egovlm.export.targets import ExportConfigError
from tests.export.dims import QWEN_3B

GB = 1024**3


# Profile sizing and the fit check (with the real 3B's numbers) are tested in tests/export/test_fit.py.


def test_vision_profile_is_static() -> None:
    assert tb.vision_profile(QWEN_3B)["static"]["pixel_values"][0] == [768, 1176]


def test_status_is_honest_here() -> None:
    """Here: no TensorRT (or the PyPI stub), and no usable GPU; the reason says which and the fix."""
    usable, reason = tb.tensorrt_status()
    try:
        import tensorrt  # noqa: F401
    except Exception:
        assert not usable and "the tensorrt Python module is not importable" in reason
        assert "--system-site-packages" in reason


def test_status_needs_cuda_besides_a_supported_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _Recorder("10.3.0").module)
    monkeypatch.setattr("egovlm.trt_support.cuda_device_error", lambda: "cuda-python is not installed")
    assert tb.tensorrt_status() == (
        False,
        "TensorRT 10.3.0 is installed but no CUDA device is usable: cuda-python is not installed",
    )
    monkeypatch.setattr("egovlm.trt_support.cuda_device_error", lambda: None)
    assert tb.tensorrt_status() == (True, "TensorRT 10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", _Recorder("8.6.1").module)
    usable, reason = tb.tensorrt_status()
    assert not usable and reason.startswith("TensorRT 8.6.1 is older than the supported 10.3")


def _trt_export(root: Path, runtime: str = "tensorrt") -> None:
    root.mkdir()
    for name in ("vision", "decoder"):
        (root / f"{name}.onnx").write_bytes(name.encode())
    (root / "processor").mkdir()
    body = {
        "target": "agx-orin",
        "runtime": runtime,
        "precision": "int4",
        "contract_version": 1,
        "keyframe_size": [448, 336],
        "model": QWEN_3B,
        "versions": {},
        "processor_dir": "processor",
        "graphs": {n: {"file": f"{n}.onnx", "external_data": []} for n in ("vision", "decoder")},
        "tensorrt": {
            "status": "pending-device",
            "plan": {"workspace_bytes": 1 << 28},
            "engines": {},
            "profiles": {
                "vision": {"static": {"pixel_values": [[2, 3], [2, 3], [2, 3]]}},
                "decoder": {
                    "prefill": {"inputs_embeds": [[1, 1, 8], [1, 4, 8], [1, 9, 8]]},
                    "decode": {"inputs_embeds": [[1, 1, 8], [1, 1, 8], [1, 1, 8]]},
                },
            },
        },
    }
    write_manifest(root, body)


def test_build_engines_refuses_without_tensorrt_and_names_the_device_step(tmp_path: Path) -> None:
    _trt_export(tmp_path / "e")
    if "tensorrt" in sys.modules:
        pytest.skip("a tensorrt module is importable here")
    with pytest.raises(RuntimeError, match=r"Run `egovlm export build-engines .*e` on the device"):
        tb.build_engines(tmp_path / "e")
    _trt_export(tmp_path / "cpu", runtime="onnxruntime")
    with pytest.raises(ExportConfigError, match="no engines to build"):
        tb.build_engines(tmp_path / "cpu")


class _Recorder:
    """Stands in for the tensorrt module of one release: records what the builder is asked to do.
    Releases before 10.13 return the plan as one IHostMemory buffer; 10.13+ also stream it to an
    ``IStreamWriter`` in chunks; 8.6 has no STRONGLY_TYPED flag (as its real bindings)."""

    def __init__(
        self, version: str = "10.99-fake", plan: bytes = b"plan", disk_full_after: int | None = None
    ) -> None:
        self.calls: list[tuple[Any, ...]] = []
        rec = self
        self.module = types.ModuleType("tensorrt")
        self.module.__version__ = version  # type: ignore[attr-defined]
        streams = tuple(int(p) for p in version.split("-")[0].split(".")[:2]) >= (10, 13)

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                pass

        class Profile:
            def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
                rec.calls.append(("set_shape", name, list(lo), list(opt), list(hi)))

        class Config:
            def set_memory_pool_limit(self, pool: Any, size: int) -> None:
                rec.calls.append(("workspace", size))

            def add_optimization_profile(self, profile: Profile) -> None:
                rec.calls.append(("add_profile",))

            def set_flag(self, flag: Any) -> None:  # must never be called: strongly typed only
                rec.calls.append(("set_flag", flag))

        class IStreamWriter:
            def __init__(self) -> None:
                self.base_initialised = True

        class Builder:
            def __init__(self, logger: Logger) -> None:
                pass

            def create_network(self, flags: int) -> str:
                rec.calls.append(("network_flags", flags))
                return "network"

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: str, config: Config) -> Any:
                rec.calls.append(("build", "host memory"))
                return np.frombuffer(plan, dtype=np.uint8)  # a buffer, as IHostMemory is

            def stream(self, network: str, config: Config, writer: IStreamWriter) -> bool:
                assert writer.base_initialised, "the writer must call IStreamWriter.__init__"
                rec.calls.append(("build", "stream"))
                for i in range(0, len(plan), 3):
                    if disk_full_after is not None and i >= disk_full_after:
                        return writer.write(plan[i : i + 3]) == len(plan[i : i + 3])  # type: ignore[attr-defined]
                    assert writer.write(plan[i : i + 3]) == len(plan[i : i + 3])  # type: ignore[attr-defined]
                return True

        if streams:
            Builder.build_serialized_network_to_stream = Builder.stream  # type: ignore[attr-defined]
            self.module.IStreamWriter = IStreamWriter  # type: ignore[attr-defined]

        class Parser:
            num_errors = 0

            def __init__(self, network: str, logger: Logger) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                rec.calls.append(("parse", Path(path).name))
                return True

        flags = {} if version.startswith("8.") else {"STRONGLY_TYPED": 5}
        self.module.Logger = Logger  # type: ignore[attr-defined]
        self.module.Builder = Builder  # type: ignore[attr-defined]
        self.module.OnnxParser = Parser  # type: ignore[attr-defined]
        self.module.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, **flags)  # type: ignore[attr-defined]
        self.module.MemoryPoolType = types.SimpleNamespace(WORKSPACE="ws")  # type: ignore[attr-defined]


@pytest.fixture
def built_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[_Recorder, Path]:
    """A TensorRT export folder (not built yet) and the recording tensorrt stand-in that builds it."""
    rec = _Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    monkeypatch.setattr(tb, "tensorrt_status", lambda: (True, "TensorRT 10.99-fake"))
    root = tmp_path / "e"
    _trt_export(root)
    return rec, root


def test_build_flow_is_strongly_typed_and_republishes_the_manifest(
    built_export: tuple[_Recorder, Path],
) -> None:
    rec, root = built_export
    engines = tb.build_engines(root)
    assert engines == {"vision": "engines/vision.plan", "decoder": "engines/decoder.plan"}
    assert ("network_flags", 1 << 5) in rec.calls and not any(c[0] == "set_flag" for c in rec.calls)
    assert sum(c == ("add_profile",) for c in rec.calls) == 3  # vision static + decoder prefill/decode
    assert ("set_shape", "inputs_embeds", [1, 1, 8], [1, 4, 8], [1, 9, 8]) in rec.calls
    manifest = load_manifest(root)  # re-hashed, engines included
    assert manifest.data["tensorrt"]["status"] == "built"
    assert manifest.engine_path("decoder") == root / "engines" / "decoder.plan"
    assert "engines/decoder.plan" in json.loads((root / "manifest.json").read_text())["files"]


PLAN = bytes(range(256)) * 4 + b"end"


@pytest.mark.parametrize(
    ("version", "how"),
    [("10.3.0", "host memory"), ("10.12.0", "host memory"), ("10.13.0", "stream"), ("11.4.0.106", "stream")],
)
def test_the_plan_is_streamed_where_tensorrt_can_and_written_whole_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, how: str
) -> None:
    rec = _Recorder(version, PLAN)
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    tb.build_engine(tmp_path / "g.onnx", tmp_path / "g.plan", {"p": {"x": ([1], [2], [3])}}, 1 << 20)
    assert ("build", how) in rec.calls and [c for c in rec.calls if c[0] == "build"] == [("build", how)]
    assert (tmp_path / "g.plan").read_bytes() == PLAN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.plan"]  # no temporary left


def test_a_failed_streamed_write_leaves_no_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _Recorder("10.13.0", PLAN, disk_full_after=30)
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    real_open = Path.open

    def full_disk_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(self, mode, *args, **kwargs)
        if "w" in mode:
            real_write, written = f.write, [0]

            def write(data: Any) -> int:
                if written[0] >= 30:
                    raise OSError(28, "No space left on device")
                written[0] += len(data)
                return int(real_write(data))

            f.write = write  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(Path, "open", full_disk_open)
    with pytest.raises(OSError, match="No space left"):  # the write error, not a TensorRT one
        tb.build_engine(tmp_path / "g.onnx", tmp_path / "g.plan", {"p": {"x": ([1], [2], [3])}}, 1 << 20)
    assert list(tmp_path.iterdir()) == []


def test_tensorrt_8_6_is_refused_before_building_with_the_jetpack_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from egovlm.trt_support import TensorRTUnsupportedError

    rec = _Recorder("8.6.1")
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    with pytest.raises(
        TensorRTUnsupportedError, match=r"TensorRT 8.6.1 is older .* flash JetPack 6.1 or newer"
    ):
        tb.build_engine(tmp_path / "g.onnx", tmp_path / "g.plan", {}, 1 << 20)
    assert rec.calls == []  # refused at import, not an AttributeError half-way through


def test_interrupted_rebuild_keeps_the_previous_engines_and_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built_export: tuple[_Recorder, Path]
) -> None:
    _, root = built_export
    tb.build_engines(root)
    before = (root / "manifest.json").read_text()
    plans = {p.name: p.read_bytes() for p in (root / "engines").iterdir()}
    built: list[str] = []

    def build_then_fill_the_disk(onnx: Path, engine: Path, *args: Any) -> None:
        if built:
            raise OSError(28, "No space left on device")  # the second engine of the rebuild
        engine.write_bytes(b"new plan")
        built.append(engine.name)

    monkeypatch.setattr(tb, "build_engine", build_then_fill_the_disk)
    with pytest.raises(OSError, match="No space left"):
        tb.build_engines(root)
    assert built  # one new engine was written before the failure...
    assert {p.name: p.read_bytes() for p in (root / "engines").iterdir()} == plans  # ...but not published
    assert (root / "manifest.json").read_text() == before
    load_manifest(root)  # hashes still verify
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # no staging folder left
