"""The ``onnx`` backend on real exports of the tiny model: cached answers equal its own from-scratch
answers and the torch backend's, token for token (logits compared too); the prefix state is never
written; shared leading keyframes are reused exactly; int8 loads and answers; wrong folders,
tampered files, another prompt contract and missing providers are refused with the reason."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from egovlm.descriptor import describe
from egovlm.edge.backends import BackendError, GenerationParams, PrefixState, create_backend
from egovlm.edge.backends.onnx_backend import (
    CPU,
    CUDA,
    TENSORRT,
    OnnxBackend,
    select_providers,
)
from egovlm.edge.backends.torch_backend import TorchBackend
from egovlm.edge.buffer import Keyframe, KeyframeBuffer
from egovlm.edge.engine import Engine, EngineParams
from egovlm.frames import resize_for_model
from tests.edge.edge_fakes import QUESTIONS, blocky_images
from tests.exports import quick_export

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_NEW = 12


@pytest.fixture(scope="module")
def fp32_dir(sharp_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quick_export(sharp_model_dir, tmp_path_factory.mktemp("exports") / "fp32")


@pytest.fixture(scope="module")
def int8_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quick_export(tiny_model_dir, tmp_path_factory.mktemp("exports") / "int8", precision="int8")


@pytest.fixture(scope="module")
def onnx(fp32_dir: Path) -> OnnxBackend:
    return OnnxBackend.load(fp32_dir, threads=1)


@pytest.fixture(scope="module")
def reference(sharp_model_dir: Path) -> TorchBackend:
    return TorchBackend.load(sharp_model_dir)


def _keyframes(size: tuple[int, int], n: int, seed: int = 0) -> tuple[Keyframe, ...]:
    buf = KeyframeBuffer(capacity=n)
    for i, img in enumerate(blocky_images(n, seed)):
        buf.add(1.0 + 2.5 * i, resize_for_model(img, size), describe(img))
    return buf.snapshot().keyframes


def _state(backend: Any, kfs: Sequence[Keyframe], previous: PrefixState | None = None) -> PrefixState:
    feats = [backend.encode_keyframe(k.id, k.image) for k in kfs]
    return backend.build_prefix(1, kfs, feats, previous=previous)


def _greedy(**kw: Any) -> GenerationParams:
    return GenerationParams(max_new_tokens=N_NEW, return_scores=True, **kw)


def test_cached_equals_scratch_and_torch_token_for_token(onnx: OnnxBackend, reference: TorchBackend) -> None:
    kfs = _keyframes(onnx.keyframe_size, 3)
    state, torch_state = _state(onnx, kfs), _state(reference, kfs)
    assert state.data.input_ids.tolist() == torch_state.data.input_ids[0].tolist()
    for q, opts in QUESTIONS:
        cached = onnx.generate(state, q, opts, _greedy())
        scratch = onnx.generate_from_scratch(kfs, q, opts, _greedy())
        theirs = reference.generate(torch_state, q, opts, _greedy())
        assert len(set(cached.token_ids)) > 3, "the answer must vary, or equality proves little"
        assert cached.token_ids == scratch.token_ids == theirs.token_ids
        assert cached.n_prompt_tokens == scratch.n_prompt_tokens == theirs.n_prompt_tokens
        assert cached.n_prefill_tokens == cached.n_prompt_tokens - state.n_tokens  # only the question
        assert scratch.n_prefill_tokens == scratch.n_prompt_tokens
        assert cached.scores is not None and scratch.scores is not None and theirs.scores is not None
        for mine, again, ref in zip(cached.scores, scratch.scores, theirs.scores, strict=True):
            np.testing.assert_allclose(mine, again, atol=1e-4)
            np.testing.assert_allclose(mine, ref.numpy(), atol=1e-3)


def test_logit_comparison_detects_wrong_positions(onnx: OnnxBackend) -> None:
    """Negative control: the question prefilled one M-RoPE position off moves the logits by far
    more than the tolerances above, so those comparisons have teeth."""
    from dataclasses import replace

    kfs = _keyframes(onnx.keyframe_size, 3)
    state = _state(onnx, kfs)
    q, opts = QUESTIONS[0]
    good = onnx.generate(state, q, opts, _greedy())
    kv = state.data.kv
    shifted = replace(state, data=replace(state.data, kv=replace(kv, next_position=kv.next_position + 1)))
    bad = onnx.generate(shifted, q, opts, _greedy())
    assert good.scores is not None and bad.scores is not None
    assert np.abs(good.scores[0] - bad.scores[0]).max() > 10 * 1e-3


def test_prefix_state_is_never_written(onnx: OnnxBackend) -> None:
    kfs = _keyframes(onnx.keyframe_size, 2, seed=5)
    state = _state(onnx, kfs)
    before = [p.copy() for p in state.data.kv.past]
    first = onnx.generate(state, *QUESTIONS[0], _greedy())
    onnx.generate(state, *QUESTIONS[1], _greedy())
    again = onnx.generate(state, *QUESTIONS[0], _greedy())
    assert all(np.array_equal(a, b) for a, b in zip(before, state.data.kv.past, strict=True))
    assert state.data.kv.length == state.n_tokens
    assert first.token_ids == again.token_ids


def test_rebuild_reuses_shared_leading_keyframes_exactly(onnx: OnnxBackend) -> None:
    kfs = _keyframes(onnx.keyframe_size, 4, seed=2)
    fresh = _state(onnx, kfs)
    partial = _state(onnx, kfs[:2])
    grown = _state(onnx, kfs, previous=partial)  # two keyframes arrive: only theirs are prefilled
    assert 0 < grown.reused_tokens < grown.n_tokens and grown.n_tokens == fresh.n_tokens
    assert partial.data.kv.length == partial.n_tokens  # the old state is intact
    subset = _state(onnx, kfs[:3], previous=fresh)  # a leading subset: pure slicing
    assert subset.reused_tokens == subset.n_tokens
    moved = _state(onnx, kfs[1:], previous=fresh)  # the first frame left: frame numbers shift
    assert moved.reused_tokens == 0
    q, opts = QUESTIONS[0]
    expected = onnx.generate(fresh, q, opts, _greedy())
    assert onnx.generate(grown, q, opts, _greedy()).token_ids == expected.token_ids
    assert (
        onnx.generate(subset, q, opts, _greedy()).token_ids
        == onnx.generate_from_scratch(kfs[:3], q, opts, _greedy()).token_ids
    )


def test_engine_encodes_each_keyframe_once_and_streams(onnx: OnnxBackend) -> None:
    engine = Engine(onnx, KeyframeBuffer(capacity=4), EngineParams(GenerationParams(max_new_tokens=N_NEW)))
    for i, img in enumerate(blocky_images(4, seed=3)):
        engine.add_keyframe(2.0 * i, img)
    calls = onnx.vision_calls
    pieces: list[str] = []
    cached = engine.ask(*QUESTIONS[0], on_text=pieces.append)
    assert onnx.vision_calls - calls == 4  # the state was built on demand: one encode per keyframe
    cached_again = engine.ask(*QUESTIONS[1])
    assert onnx.vision_calls - calls == 4  # questions never run the vision graph on the cached path
    scratch = engine.ask(*QUESTIONS[0], use_cache=False)
    assert cached.cached and not scratch.cached and cached_again.cached
    assert cached.token_ids == scratch.token_ids
    assert "".join(pieces) == cached.text  # streaming delivers exactly the answer
    assert cached.latency.n_prefill_tokens < scratch.latency.n_prefill_tokens


def test_int8_export_loads_and_answers(int8_dir: Path) -> None:
    backend = create_backend("onnx", int8_dir, threads=1)
    assert backend.describe()["precision"] == "int8"
    assert backend.describe()["providers"] == [CPU]
    engine = Engine(backend, KeyframeBuffer(capacity=3), EngineParams(GenerationParams(max_new_tokens=8)))
    for i, img in enumerate(blocky_images(3, seed=4)):
        engine.add_keyframe(2.0 * i, img)
    for use_cache in (True, False):
        answer = engine.ask(*QUESTIONS[0], use_cache=use_cache)
        assert answer.cached is use_cache
        assert 1 <= len(answer.token_ids) <= 8
        assert answer.latency.n_new_tokens == len(answer.token_ids)
        assert answer.latency.ttft_ms > 0 and answer.latency.n_prompt_tokens > 3 * 12
        assert len(answer.keyframes) == 3 and isinstance(answer.text, str)
        assert answer.parsed.format_ok in (True, False)  # parsed, whatever a random model says


def test_wrong_folders_are_named(fp32_dir: Path, sharp_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="is a model folder .*egovlm export --model"):
        create_backend("onnx", sharp_model_dir)
    with pytest.raises(BackendError, match=r"is an export folder .*--backend onnx.*tiny-sharp"):
        create_backend("torch", fp32_dir)
    with pytest.raises(BackendError, match="export folder not found"):
        create_backend("onnx", tmp_path / "nothing")
    with pytest.raises(BackendError, match="exported for target cpu .*--backend onnx"):
        create_backend("tensorrt", fp32_dir)


def test_tampered_or_other_contract_exports_are_refused(fp32_dir: Path, tmp_path: Path) -> None:
    tampered = shutil.copytree(fp32_dir, tmp_path / "tampered")
    with open(tampered / "embed.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BackendError, match=r"onnx backend: .*embed.onnx: size .* differs"):
        OnnxBackend.load(tampered)
    other = shutil.copytree(fp32_dir, tmp_path / "other")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["contract_version"] = 99
    (other / "manifest.json").write_text(json.dumps(manifest))
    from egovlm.contract import CONTRACT_VERSION

    speaks = f"prompt contract v99, this runtime speaks v{CONTRACT_VERSION}; re-export"
    with pytest.raises(BackendError, match=speaks):
        OnnxBackend.load(other)


def test_provider_selection() -> None:
    cpu_only = [CPU]
    gpu = [TENSORRT, CUDA, CPU]
    assert select_providers("cpu", cpu_only) == [CPU]
    assert select_providers("cuda:1", gpu) == [(CUDA, {"device_id": 1}), CPU]
    assert select_providers("tensorrt", gpu)[:2] == [(TENSORRT, {"device_id": 0}), (CUDA, {"device_id": 0})]
    assert select_providers("CUDAExecutionProvider,CPUExecutionProvider", gpu) == [CUDA, CPU]
    with pytest.raises(BackendError, match=r"CUDAExecutionProvider not available .*onnxruntime-gpu"):
        select_providers("cuda", cpu_only)
    with pytest.raises(BackendError, match=r"TensorrtExecutionProvider not available .*TensorRT's libraries"):
        select_providers("tensorrt", [CUDA, CPU])
    with pytest.raises(BackendError, match="unknown device 'tpu'"):
        select_providers("tpu", gpu)
    with pytest.raises(BackendError, match="expected cuda:N"):
        select_providers("cuda:x", gpu)


def test_missing_provider_is_refused_at_load(fp32_dir: Path) -> None:
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(BackendError, match="CUDAExecutionProvider not available"):
        create_backend("onnx", fp32_dir, device="cuda")


def test_runtime_and_cli_select_the_backend(fp32_dir: Path, sharp_model_dir: Path) -> None:
    from typer.testing import CliRunner

    from egovlm.cli import app
    from egovlm.edge.runtime import build_runtime

    runtime = build_runtime(fp32_dir, None, profile="cpu", backend="onnx", capacity=2, max_new_tokens=4)
    assert isinstance(runtime.engine.backend, OnnxBackend)
    for i, img in enumerate(blocky_images(2, seed=6)):
        runtime.engine.add_keyframe(2.0 * i, img)
    answer = runtime.ask(*QUESTIONS[1])
    assert answer.cached and len(answer.token_ids) == 4
    for backend, model, message in [
        ("onnx", sharp_model_dir, "is a model folder"),
        ("torch", fp32_dir, "is an export folder"),
    ]:
        r = CliRunner().invoke(
            app, ["edge", "run", "--source", "test://", "--backend", backend, "--model", str(model)]
        )
        assert r.exit_code == 2 and message in r.output, r.output


def test_latency_benchmark_runs_an_export(fp32_dir: Path, tmp_path: Path) -> None:
    from egovlm.benchmarks.latency import run

    report = run(
        tmp_path,
        fp32_dir,
        ks=(1, 2),
        repeats=1,
        scratch_repeats=1,
        max_new_tokens=3,
        warmup=0,
        backend_kind="onnx",
    )
    assert report.params["backend"]["backend"] == "onnx"
    rows = {(r["k"], r["mode"]): r for r in report.rows}
    assert set(rows) == {(1, "cached"), (1, "scratch"), (2, "cached"), (2, "scratch")}
    assert all(r["greedy_tokens_identical"] for r in report.rows)
    for k in (1, 2):  # cached prefills the question only; scratch the whole prompt
        assert (
            rows[k, "cached"]["prefill_tokens"]
            < rows[k, "scratch"]["prefill_tokens"]
            == rows[k, "scratch"]["prompt_tokens"]
        )
    assert (tmp_path / "latency.json").is_file()
    with pytest.raises(ValueError, match="--backend onnx needs --model EXPORT_DIR"):
        run(tmp_path, None, backend_kind="onnx")
