"""The fit check and the TensorRT profile plan with the real Qwen2.5-VL-3B's numbers.

Where the numbers come from: the slice builder's record of the real 3B (egovlm.models.presets.QWEN25_VL_3B,
the widths ``egovlm model slice3b`` builds with) gives the config; :meth:`ModelDims.tensors` turns it into
the checkpoint's tensor list. The slow test builds a 1-layer slice (0.9 GB, ~25 s) and proves that list
equals the slice's safetensors header and that the slice's bytes scaled to the real layer counts
(per-layer bytes x 36 decoder layers / 32 ViT blocks) equal the full model's, for every runtime and
precision; so the fast tests run on exactly the slice-measured numbers without building 0.9 GB each time.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from egovlm.contract import MAX_QUESTION_TOKENS
from egovlm.edge.backends.base import BackendError
from egovlm.edge.backends.tensorrt_backend import choose_profile, manifest_profile_ranges
from egovlm.edge.profile import load_profile
from egovlm.export import fit
from egovlm.export import pipeline as pl
from egovlm.export import tensorrt_build as tb
from egovlm.export.targets import ExportConfigError, load_targets
from egovlm.models.files import SAFETENSORS_INDEX
from egovlm.models.presets import DEFAULT_KEYFRAME_SIZE, QWEN25_VL_3B

TRT_TARGETS = sorted(n for n, t in load_targets().items() if t.uses_tensorrt)
SIZE = DEFAULT_KEYFRAME_SIZE


def real_3b_config() -> dict[str, Any]:
    """config.json fields of the real 3B, from the slice builder's record of it."""
    p = QWEN25_VL_3B
    return {
        "tie_word_embeddings": True,
        "text_config": {
            "num_hidden_layers": p.num_layers,
            "hidden_size": p.hidden_size,
            "num_attention_heads": p.num_heads,
            "num_key_value_heads": p.num_kv_heads,
            "intermediate_size": p.intermediate_size,
            "vocab_size": p.vocab_rows,
        },
        "vision_config": {
            "depth": p.vision_depth,
            "hidden_size": p.vision_hidden,
            "intermediate_size": p.vision_intermediate,
            "num_heads": p.vision_heads,
            "out_hidden_size": p.hidden_size,
        },
    }


REAL = fit.ModelDims.from_config(real_3b_config())


def nano_workload(target: str, keyframes: int | None = None) -> fit.Workload:
    """The workload the export plans for ``target`` (the device profile's keyframes and answer length,
    prefill chunked)."""
    return tb.export_workload(load_targets()[target], REAL, SIZE, keyframes)


def plan_for(target: str, precision: str | None = None, keyframes: int | None = None) -> tb.EnginePlan:
    t = load_targets()[target]
    weights = fit.weight_bytes(REAL.tensors(), "tensorrt", precision or t.default_precision)
    return tb.plan_profiles(t, REAL, weights, nano_workload(target, keyframes), SIZE)


def test_real_3b_numbers() -> None:
    assert fit.KNOWN_MODELS["qwen2.5-vl-3b"] == REAL  # the edge check's model family is the same 3B
    assert 3.75e9 < REAL.text_params() + REAL.vision_params() < 3.76e9  # "3B" is 3.75 B with vision
    w = {p: fit.weight_bytes(REAL.tensors(), "tensorrt", p) for p in ("fp16", "int8", "int4")}
    embed = REAL.vocab * REAL.hidden * 2
    for p in w:  # the tied head: in the embed graph AND in the decoder, unquantised (ModelOpt skips it)
        assert w[p].tied and w[p].graphs["embed"].device == embed
        assert w[p].graphs["decoder"].device > embed
    linear = 36 * (2 * 2048 * 2048 + 2 * 256 * 2048 + 3 * 2048 * 11008)
    int4_scales = 36 * (2 * 2048 * 16 + 2 * 256 * 16 + 2 * 11008 * 16 + 2048 * 86) * 2  # fp16 per 128 block
    int4_decoder = w["int4"].graphs["decoder"].device
    assert int4_decoder >= linear // 2 + int4_scales + embed  # packed nibbles + scales + head
    assert w["int8"].graphs["decoder"].file == pytest.approx(w["fp16"].graphs["decoder"].file, rel=0.01)
    assert w["int8"].graphs["decoder"].device < 0.6 * w["fp16"].graphs["decoder"].device  # folded int8
    ort = fit.weight_bytes(REAL.tensors(), "onnxruntime", "int4").graphs["decoder"].file
    assert ort > linear // 2 + linear // 32 * 4  # MatMulNBits: fp32 scale per 32-block
    assert fit.ORT_INT4_BLOCK == __import__("egovlm.export.quantize", fromlist=["x"]).ORT_INT4_BLOCK


@pytest.mark.parametrize("target", TRT_TARGETS)
def test_profiles_admit_every_runtime_call_after_a_full_buffer(target: str) -> None:
    """(a) Orin Nano and (b) every TensorRT target, at the default precision, with the device profile's
    keyframes and answer length: every call the runtime issues (each chunk of every prefix build,
    full and partial rebuild, question of up to the maximum length after a full buffer and question
    from scratch; every answer token) has a profile, chosen by the runtime's own choose_profile on
    the ranges it reads from the manifest; and no call is longer than the plan's chunk."""
    plan = plan_for(target)
    device = load_profile(target)
    assert plan.keyframes == device.keyframes.capacity
    assert plan.question_tokens == MAX_QUESTION_TOKENS
    assert plan.max_chunk == fit.TENSORRT_MAX_CHUNK
    ranges = manifest_profile_ranges(tb.decoder_profiles(QWEN_MODEL_BLOCK, plan))
    assert [r.name for r in ranges] == ["prefill", "decode"]
    work = nano_workload(target)
    calls = fit.runtime_calls(work)
    full, k = work.prefix_tokens(), work.keyframes
    question = f"question of {MAX_QUESTION_TOKENS} tokens after {k} keyframes"
    assert (question, MAX_QUESTION_TOKENS, full) in calls  # one chunk: the longest question fits one
    chosen: dict[str, set[str]] = {}
    for what, seq, past in calls:
        assert 1 <= seq <= plan.max_chunk, (what, seq, past)
        chosen.setdefault(what, set()).add(choose_profile(seq, past, ranges).name)
    assert chosen[question] == {"prefill"}
    assert chosen[f"answer token after {k} keyframes"] == {"decode"}
    assert "prefill" in chosen[f"prefix of {k} keyframes"]
    assert "prefill" in chosen[f"question from scratch with {k} keyframes"]
    if k > 1:
        assert "prefill" in chosen[f"rebuild of {k} keyframes reusing 1"]
    # Each prefill is split as the runner splits it, and a whole prefix is several calls.
    prefix_calls = [seq for what, seq, _ in calls if what == f"prefix of {k} keyframes"]
    assert prefix_calls == fit.chunk_sizes(full, plan.max_chunk) and len(prefix_calls) > 1
    # Nothing beyond the workload: one token more than the longest conversation, or a call longer
    # than a chunk, is refused.
    with pytest.raises(BackendError, match="no decoder profile"):
        choose_profile(1, full + MAX_QUESTION_TOKENS + work.new_tokens, ranges)
    with pytest.raises(BackendError, match="no decoder profile"):
        choose_profile(plan.max_chunk + 1, 0, ranges)
    assert plan.max_context >= full + MAX_QUESTION_TOKENS + work.new_tokens


QWEN_MODEL_BLOCK = {  # the manifest's model block for the 3B (what decoder_profiles reads)
    "hidden_size": REAL.hidden,
    "num_layers": REAL.layers,
    "num_kv_heads": REAL.kv_heads,
    "head_dim": REAL.head_dim,
}


def test_the_old_plan_refused_the_nano_and_this_one_does_not() -> None:
    """The defect: the prefill profile admitted past <= max_context - max_prefill only. A question after
    a full buffer and a chunked rebuild both need past up to the prefix."""
    plan = plan_for("orin-nano")
    ranges = manifest_profile_ranges(tb.decoder_profiles(QWEN_MODEL_BLOCK, plan))
    old_past_limit = plan.max_context - plan.max_prefill
    assert plan.prefix_tokens > old_past_limit  # what the old profile refused ...
    assert choose_profile(MAX_QUESTION_TOKENS, plan.prefix_tokens, ranges).name == "prefill"  # ... admitted


def test_chunked_prefill_is_what_fits_eight_keyframes_on_the_nano() -> None:
    """The design decision, in numbers (the real 3B at int4, Orin Nano's 4.80 GiB): a whole prompt in
    one call (unfused attention over ~2,000 tokens) needs more than the budget at 8 keyframes;
    chunks of 256 need a fraction of those activations, and 8 keyframes fit."""
    t = load_targets()["orin-nano"]
    weights = fit.weight_bytes(REAL.tensors(), "tensorrt", "int4")
    chunked = nano_workload("orin-nano", 8)
    budget = tb.target_budget(t)
    plan = fit.memory_plan(REAL, weights, chunked, SIZE, budget)
    whole = fit.memory_plan(REAL, weights, replace(chunked, max_chunk=None), SIZE, budget)
    assert plan.fits and not whole.fits
    assert plan.decoder_activation < whole.decoder_activation / 5
    assert plan.total <= budget.total < whole.total
    # The activation bound is at the boxes' corners: a chunk after the longest prompt.
    p, q = chunked.prefix_tokens(), chunked.question_tokens
    corner = fit.decoder_activation_bytes(REAL, 256, 256 + p + q - 1, 2.0)
    assert plan.decoder_activation == corner


def test_kv_live_tokens_is_the_sum_of_what_the_runtime_holds() -> None:
    """The warm prefix + a question's decode (its last step's input and output) + one build_prefix of a
    background rebuild (the worst reuse: a copy of the reused keyframes for the first chunk, then the
    last chunk's input and output), each term from the runtime's own chunking."""
    w = nano_workload("orin-nano", 8)
    p, q, n, c = w.prefix_tokens(), w.question_tokens, w.new_tokens, w.max_chunk
    assert fit.question_held(w) == 2 * (p + q + n) - 3
    rebuilds = [
        fit.extend_held(w.prefix_tokens(s), p - w.prefix_tokens(s), c, copy=w.prefix_tokens(s) if s else 0)
        for s in range(w.keyframes)
    ]
    assert fit.rebuild_held(w, w.keyframes) == max(rebuilds)
    assert fit.kv_live_tokens(w) == p + fit.question_held(w) + max(rebuilds)
    # extend_held by hand: 416 new tokens after 1,328 reused = chunks 256 + 160; the last call holds
    # its input (1,584) and output (1,744); the first its copy of the reused KV and its output.
    assert fit.extend_held(1328, 416, 256, copy=1328) == max(1328 + 1328 + 256, 1584 + 1744)
    # Without chunking one call: the copy and the output.
    assert fit.extend_held(1328, 416, None, copy=1328) == 1328 + 1744
    # Beyond 8 keyframes the engine builds 8 at a time, holding the previous build besides W.
    from egovlm.edge.engine import EngineParams

    assert EngineParams().rebuild_chunk_frames == fit.ENGINE_REBUILD_FRAMES == w.rebuild_frames
    big = replace(w, keyframes=16)
    p8, p16 = big.prefix_tokens(8), big.prefix_tokens(16)
    assert fit.rebuild_held(big, 8) >= p8 + fit.extend_held(p8, p16 - p8, c)


def test_memory_grows_with_keyframes_and_the_largest_fit_is_exact() -> None:
    t = load_targets()["orin-nano"]
    w = fit.weight_bytes(REAL.tensors(), "tensorrt", "int4")
    work = nano_workload("orin-nano")
    budget = tb.target_budget(t)
    k = fit.largest_fitting_keyframes(REAL, w, work, SIZE, budget)
    assert k >= load_profile("orin-nano").keyframes.capacity
    assert fit.memory_plan(REAL, w, replace(work, keyframes=k), SIZE, budget).fits
    assert not fit.memory_plan(REAL, w, replace(work, keyframes=k + 1), SIZE, budget).fits


@pytest.mark.parametrize(
    ("target", "precision", "keyframes"), [("orin-nano", "fp16", None), ("orin-nano", "int4", 64)]
)
def test_fit_check_refuses_before_any_export_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, precision: str, keyframes: int | None
) -> None:
    """(c) fp16 3B, or 64 keyframes, on Orin Nano: refused by run_export from the checkpoint's header
    and config, before load_model or any graph export, naming the numbers and the --keyframes that fit."""
    model = _real_3b_checkpoint(tmp_path, monkeypatch)
    _forbid_export_work(monkeypatch)
    out = tmp_path / "out"
    opts = pl.ExportOptions(
        model=str(model), out=out, target=target, precision=precision, keyframes=keyframes
    )
    with pytest.raises(ExportConfigError) as err:
        pl.run_export(opts)
    msg = str(err.value)
    assert f"{target}: the model does not fit at {precision}" in msg
    for part in (
        "weights",
        "decoder",
        "tied LM head exported twice",
        "KV",
        "activations",
        "runtime reserve",
        "GiB of 4.80 GiB",
    ):
        assert part in msg, part
    if precision == "int4":
        best = fit.largest_fitting_keyframes(
            REAL,
            fit.weight_bytes(REAL.tensors(), "tensorrt", "int4"),
            nano_workload(target),
            SIZE,
            tb.target_budget(load_targets()[target]),
        )
        assert f"--keyframes {best} would fit at int4" in msg and best >= 1
    else:
        assert "not even one keyframe fits at fp16" in msg and "int4" in msg
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_model_that_fits_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(d) the device profile's keyframes at the default precision: the fit check passes and plans the
    profiles the export writes into its manifest."""
    model = _real_3b_checkpoint(tmp_path, monkeypatch)
    for target in TRT_TARGETS:
        t = load_targets()[target]
        checked = tb.check_export_fit(t, model, t.default_precision)
        assert checked.plan.fits and checked.plan.total <= t.budget_bytes
        assert checked.engine.keyframes == load_profile(target).keyframes.capacity
        assert list(checked.engine.boxes) == ["prefill", "decode"]
        assert checked.engine.max_chunk == fit.TENSORRT_MAX_CHUNK


def test_final_check_uses_the_real_file_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _real_3b_checkpoint(tmp_path, monkeypatch)
    t = load_targets()["orin-nano"]
    checked = tb.check_export_fit(t, model, "int4")
    predicted = {n: g.file for n, g in checked.plan.weights.graphs.items()}
    assert checked.with_file_bytes(predicted, checked.plan.workload.tokens_per_keyframe).weights_bytes == (
        checked.plan.weights.device
    )
    bigger = {**predicted, "decoder": predicted["decoder"] * 2}  # the files came out larger than predicted
    with pytest.raises(ExportConfigError, match="orin-nano: the model does not fit"):
        checked.with_file_bytes(bigger, checked.plan.workload.tokens_per_keyframe)
    with pytest.raises(ExportConfigError, match="tokens per keyframe"):
        checked.with_file_bytes(predicted, 48)


def test_headers_are_read_from_single_and_sharded_checkpoints(tiny_model_dir: Path, tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    tensors = fit.read_tensors(tiny_model_dir)
    dims = fit.ModelDims.from_model_dir(tiny_model_dir)
    assert {(t.name, t.shape) for t in tensors} == {(t.name, t.shape) for t in dims.tensors()}
    # The same tensors split into two shards behind model.safetensors.index.json.
    shards = [tensors[: len(tensors) // 2], tensors[len(tensors) // 2 :]]
    weight_map: dict[str, str] = {}
    for i, part in enumerate(shards):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({t.name: np.zeros(t.shape, dtype=np.float16) for t in part}, str(tmp_path / name))
        weight_map |= {t.name: name for t in part}
    (tmp_path / SAFETENSORS_INDEX).write_text(json.dumps({"weight_map": weight_map}))
    assert sorted(fit.read_tensors(tmp_path), key=lambda t: t.name) == sorted(tensors, key=lambda t: t.name)
    with pytest.raises(fit.FitError, match="no \\*.safetensors"):
        fit.read_tensors(tmp_path / "nothing")


def test_question_limit_is_enforced_where_the_question_is_tokenised() -> None:
    from egovlm.contract import QuestionTooLongError
    from egovlm.edge.backends.prompt import PromptText, split_ids

    class Chars:  # one token per character
        def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
            return {"input_ids": [ord(c) for c in text]}

    ok = PromptText("P\n", "q" * MAX_QUESTION_TOKENS)
    assert len(split_ids(Chars(), ok)) == MAX_QUESTION_TOKENS
    with pytest.raises(
        QuestionTooLongError, match=f"is {MAX_QUESTION_TOKENS + 1} tokens; the limit is {MAX_QUESTION_TOKENS}"
    ):
        split_ids(Chars(), PromptText("P\n", "q" * (MAX_QUESTION_TOKENS + 1)))


@pytest.mark.slow
def test_slice_header_times_real_layers_is_the_3b(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A 1-layer slice of the 3B (real widths, 0.9 GB bf16): its safetensors header equals the tensor
    list its config implies, and per-layer bytes x the real layer counts give the numbers the fast tests
    use, for every runtime and precision. Then the fit check refuses the slice's own fp16 export on a
    small target before load_model."""
    from egovlm.models.build import build_slice3b
    from egovlm.models.presets import real_layer_counts

    path = build_slice3b(tmp_path_factory.mktemp("slice") / "s1", 1)
    header = fit.read_tensors(path)
    own = fit.ModelDims.from_model_dir(path)
    assert {(t.name, t.shape) for t in header} == {(t.name, t.shape) for t in own.tensors()}
    counts = real_layer_counts(path)
    assert replace(own, layers=counts.text, vision_depth=counts.vision) == REAL
    for runtime, precisions in (
        ("tensorrt", ("fp16", "int8", "int4", "fp8")),
        ("onnxruntime", ("fp32", "int8", "int4")),
    ):
        for p in precisions:
            scaled = fit.weight_bytes(header, runtime, p, layers=counts.text, vision_depth=counts.vision)
            assert scaled.graphs == fit.weight_bytes(REAL.tensors(), runtime, p).graphs, (runtime, p)


def _real_3b_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model folder with the real 3B's config.json; its tensor list is the slice-proven one (the
    slow test above), served in place of a 7.5 GB safetensors file."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(real_3b_config()))
    real = fit.read_tensors

    def read(path: str | Path) -> list[fit.TensorShape]:
        return REAL.tensors() if Path(path) == model else real(path)

    monkeypatch.setattr(fit, "read_tensors", read)
    return model


def _forbid_export_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import egovlm.models.loading as loading
    from egovlm.export import onnx_graphs

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("export work started before the fit check refused")

    monkeypatch.setattr(loading, "load_model", refuse)
    for name in ("export_vision", "export_embed", "export_decoder"):
        monkeypatch.setattr(onnx_graphs, name, refuse)


def test_server_maps_a_long_question_to_422_naming_the_limit() -> None:
    from egovlm.contract import QuestionTooLongError
    from egovlm.edge.server import _error_detail

    status, detail = _error_detail(QuestionTooLongError(MAX_QUESTION_TOKENS + 5))
    assert status == 422 and f"the limit is {MAX_QUESTION_TOKENS} tokens" in detail
