"""TensorRT path without TensorRT: profile sizing from the memory budget, profile shapes, the honest
"not here" status, and the build/manifest flow against a recording stand-in for the tensorrt module
(the real build awaits a device)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from egovlm.export import tensorrt_build as tb
from egovlm.export.manifest import load_manifest, write_manifest
from egovlm.export.targets import ExportConfigError, resolve

# Qwen2.5-VL-3B's decoder at the default 448x336 keyframe (192 tokens, 768 patches).
QWEN_3B = {
    "hidden_size": 2048,
    "num_layers": 36,
    "num_heads": 16,
    "num_kv_heads": 2,
    "head_dim": 128,
    "vocab_size": 151936,
    "tokens_per_keyframe": 192,
    "num_patches": 768,
    "patch_dim": 1176,
}
GB = 1024**3


def test_kv_bytes_per_token_matches_the_architecture() -> None:
    # 2 (K, V) x 36 layers x 2 kv heads x 128 dims x 2 bytes = 36 KiB per token in fp16
    assert tb.kv_bytes_per_token(QWEN_3B, 2) == 36 * 1024


def test_int4_3b_fits_orin_nano_but_fp16_does_not() -> None:
    nano, _ = resolve("orin-nano")
    plan = tb.plan_profiles(nano, QWEN_3B, weights_bytes=int(3.4 * GB))
    assert plan.max_context % tb.PROFILE_ALIGN == 0
    assert plan.prefix_tokens == 128 + 8 * 192
    assert plan.max_context >= plan.prefix_tokens + 128 + 256
    used = plan.weights_bytes + plan.activation_bytes + plan.workspace_bytes + tb.RUNTIME_RESERVE
    assert used + plan.max_context * plan.kv_bytes_per_token <= nano.budget_bytes
    with pytest.raises(ExportConfigError, match="orin-nano: the model does not fit.*int4"):
        tb.plan_profiles(nano, QWEN_3B, weights_bytes=int(7.5 * GB))
    agx, _ = resolve("agx-orin")
    assert tb.plan_profiles(agx, QWEN_3B, weights_bytes=int(7.5 * GB)).max_context > plan.max_context


def test_profiles_cover_prefill_and_decode_consistently() -> None:
    agx, _ = resolve("agx-orin")
    plan = tb.plan_profiles(agx, QWEN_3B, weights_bytes=4 * GB)
    profiles = tb.decoder_profiles(QWEN_3B, plan)
    assert set(profiles) == {"prefill", "decode"}
    for shapes in profiles.values():
        for lo, opt, hi in [shapes["inputs_embeds"], shapes["position_ids"], shapes["past_key.35"]]:
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True))
        for i in range(3):  # attention_mask covers past + seq at min, opt and max
            seq = shapes["inputs_embeds"][i][1]
            past = shapes["past_value.0"][i][2]
            assert shapes["attention_mask"][i] == [1, seq + past]
    decode = profiles["decode"]
    assert [s[1] for s in decode["inputs_embeds"]] == [1, 1, 1]
    assert decode["attention_mask"][2] == [1, plan.max_context]
    assert profiles["prefill"]["attention_mask"][2] == [1, plan.max_context]
    assert tb.vision_profile(QWEN_3B)["static"]["pixel_values"][0] == [768, 1176]


def test_status_is_honest_here() -> None:
    usable, reason = tb.tensorrt_status()
    if "tensorrt" not in sys.modules:
        assert not usable and "not installed" in reason


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
    """Stands in for the tensorrt module: records what the builder is asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        rec = self
        self.module = types.ModuleType("tensorrt")
        self.module.__version__ = "10.99-fake"  # type: ignore[attr-defined]

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

            def build_serialized_network(self, network: str, config: Config) -> bytes:
                return b"plan"

        class Parser:
            num_errors = 0

            def __init__(self, network: str, logger: Logger) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                rec.calls.append(("parse", Path(path).name))
                return True

        self.module.Logger = Logger  # type: ignore[attr-defined]
        self.module.Builder = Builder  # type: ignore[attr-defined]
        self.module.OnnxParser = Parser  # type: ignore[attr-defined]
        self.module.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)  # type: ignore[attr-defined]
        self.module.MemoryPoolType = types.SimpleNamespace(WORKSPACE="ws")  # type: ignore[attr-defined]


def test_build_flow_is_strongly_typed_and_republishes_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = _Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    monkeypatch.setattr(tb, "tensorrt_status", lambda: (True, "TensorRT 10.99-fake"))
    root = tmp_path / "e"
    _trt_export(root)
    engines = tb.build_engines(root)
    assert engines == {"vision": "engines/vision.plan", "decoder": "engines/decoder.plan"}
    assert ("network_flags", 1 << 5) in rec.calls and not any(c[0] == "set_flag" for c in rec.calls)
    assert sum(c == ("add_profile",) for c in rec.calls) == 3  # vision static + decoder prefill/decode
    assert ("set_shape", "inputs_embeds", [1, 1, 8], [1, 4, 8], [1, 9, 8]) in rec.calls
    manifest = load_manifest(root)  # re-hashed, engines included
    assert manifest.data["tensorrt"]["status"] == "built"
    assert manifest.engine_path("decoder") == root / "engines" / "decoder.plan"
    assert "engines/decoder.plan" in json.loads((root / "manifest.json").read_text())["files"]


def test_interrupted_rebuild_keeps_the_previous_engines_and_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = _Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    monkeypatch.setattr(tb, "tensorrt_status", lambda: (True, "TensorRT 10.99-fake"))
    root = tmp_path / "e"
    _trt_export(root)
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
