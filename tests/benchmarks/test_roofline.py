"""Roofline arithmetic, the Jetson projection and the slice latency path (issue 25).

Bytes and FLOPs are checked against sums written out by hand from Qwen2.5-VL-3B's published config
(hidden 2048, 16 heads of 128, 2 KV heads, MLP 11008, 36 layers, 151,936 tied embedding rows), not
against the functions' own helpers."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from egovlm.benchmarks import latency, projection, roofline
from egovlm.export.fit import KNOWN_MODELS

DIMS = KNOWN_MODELS["qwen2.5-vl-3b"]
H, KV, INTER, LAYERS, VOCAB = 2048, 2 * 128, 11008, 36, 151936
LINEARS = 2 * H * H + 2 * H * KV + 3 * H * INTER  # q, o; k, v; gate, up, down
OTHER = H + KV + KV + 2 * H  # q/k/v biases, two RMSNorm weights per layer


def test_layer_matmul_params_at_3b() -> None:
    assert roofline.layer_weight_params(DIMS) == LINEARS == 77_070_336


def test_torch_fp32_decode_bytes_read_every_weight_and_the_tied_head() -> None:
    by_hand = 4 * (LAYERS * (LINEARS + OTHER) + H + VOCAB * H)  # layers, final norm, tied head
    assert roofline.decode_weight_bytes(DIMS.tensors(), "torch", "fp32") == by_hand


def test_onnxruntime_int4_decode_bytes_match_matmulnbits_blocks() -> None:
    def nbits(out_f: int, in_f: int) -> float:  # block 32: 16 packed bytes + one fp32 scale
        return out_f * math.ceil(in_f / 32) * (16 + 4)

    linears = nbits(H, H) * 2 + nbits(KV, H) * 2 + nbits(INTER, H) * 2 + nbits(H, INTER)
    by_hand = LAYERS * (linears + 4 * OTHER) + 4 * H + nbits(VOCAB, H)  # the head is quantised too
    assert roofline.decode_weight_bytes(DIMS.tensors(), "onnxruntime", "int4") == pytest.approx(
        by_hand, abs=8
    )


def test_kv_and_prefill_flops_at_3b() -> None:
    assert roofline.kv_read_bytes(DIMS, 1000, "fp16") == 1000 * 2 * LAYERS * KV * 2
    q, past = 62, 6741
    attention = 4 * LAYERS * 16 * 128 * sum(past + i + 1 for i in range(q))
    by_hand = 2 * LAYERS * LINEARS * q + attention + 2 * H * VOCAB
    assert roofline.prefill_flops(DIMS, q, past) == pytest.approx(by_hand, rel=1e-12)


def test_fraction_above_one_is_flagged_not_reported_as_a_result() -> None:
    ok = roofline.fraction(bound_s=0.5, measured_s=1.0)
    assert ok.value == 0.5 and not ok.suspect and ok.cell() == "0.50"
    bad = roofline.fraction(bound_s=1.2, measured_s=1.0)
    assert bad.suspect and "measurement error" in bad.cell()
    with pytest.raises(ValueError, match="positive"):
        roofline.fraction(1.0, 0.0)


def test_ceiling_kernels_return_plausible_numbers() -> None:
    bw = roofline.stream_bandwidth(threads=1, mib=16, repeats=2)
    assert 0.1 < bw["copy_gbs"] < 1000 and 0.1 < bw["add_gbs"] < 1000
    assert 0 < roofline.gemm_gflops((16, 64, 64), repeats=2) < 1e5  # a loaded machine can be very slow
    shapes = roofline.gemm_shapes(DIMS, 62)
    assert shapes["mlp up/gate"] == (62, H, INTER) and shapes["k/v proj"] == (62, H, KV)


def test_projection_rows_follow_from_the_dims() -> None:
    work = projection.Workload(keyframes=32, tokens_per_keyframe=192, question_tokens=64, answer_tokens=3)
    prefix = 80 + 32 * (192 + 16)  # fit's SYSTEM_TOKENS + K x (visual + LABEL_TOKENS)
    assert work.prefix_tokens == prefix

    def awq(out_f: int, in_f: int) -> float:  # packed int4 + fp16 scale per 128-block + fp16 pre-quant scale
        return out_f * in_f / 2 + out_f * math.ceil(in_f / 128) * 2 + in_f * 2

    linears = awq(H, H) * 2 + awq(KV, H) * 2 + awq(INTER, H) * 2 + awq(H, INTER)
    weights = LAYERS * (linears + 2 * OTHER) + 2 * H + 2 * VOCAB * H  # fp16 rest, fp16 head (a copy)
    kv = 2 * LAYERS * KV * 2
    per_token = weights + kv * (prefix + 64)
    rows = projection.projection_rows(work=work)
    thor = next(r for r in rows if r["module"].startswith("AGX Thor") and r["precision"] == "int4")
    assert thor["bytes_per_token_mb"] == pytest.approx(per_token / 1e6, abs=0.06)
    assert thor["max_tok_s"] == pytest.approx(273e9 / per_token, abs=0.06)
    question = (weights + kv * prefix) + sum(weights + kv * (prefix + 64 + i) for i in range(2))
    assert thor["bytes_per_question_gb"] == pytest.approx(question / 1e9, abs=0.06)
    # int4 reads less than fp16 on every module; the faster module projects more tokens per second
    nano = {r["precision"]: r for r in rows if r["module"] == "Orin Nano 8GB (original clocks)"}
    assert (
        nano["int4"]["bytes_per_token_mb"]
        < nano["int8"]["bytes_per_token_mb"]
        < nano["fp16"]["bytes_per_token_mb"]
    )
    assert not nano["fp16"]["fits_memory"] and nano["int4"]["fits_memory"]  # 8 GB of fp16 weights
    published = projection.published_rows()
    assert all(p["implied_gb_per_token"] > 0 and p["source"] for p in published)


def _fake_model(layers: int, blocks: int) -> SimpleNamespace:
    lm = SimpleNamespace(layers=torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(layers)))
    visual = SimpleNamespace(blocks=torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(blocks)))
    return SimpleNamespace(model=SimpleNamespace(language_model=lm, visual=visual))


def test_layer_timer_splits_phases_and_projects_to_the_real_depth() -> None:
    model = _fake_model(layers=2, blocks=1)
    timer = latency.LayerTimer(model, real_layers=36, real_blocks=32)
    with timer.measure() as phases:
        for layer in model.model.language_model.layers:
            layer(torch.ones(1, 5, 4))  # a prefill call
            layer(torch.ones(1, 1, 4))  # a decode step
        model.model.visual.blocks[0](torch.ones(7, 4))
    assert phases["prefill_calls"] == 2 and phases["decode_calls"] == 2 and phases["vision_calls"] == 1
    assert phases["prefill"] > 0 and phases["decode"] > 0 and phases["vision"] > 0
    model.model.language_model.layers[0](torch.ones(1, 5, 4))  # outside measure(): not counted
    assert phases["prefill_calls"] == 2
    # 100 ms measured, of which 10 in 2 decoder layers and 4 in 1 vision block: 17x and 31x more at 36 / 32
    assert timer.project(100.0, text_ms=10.0, vision_ms=4.0) == pytest.approx(100 + 10 * 17 + 4 * 31)
    timer.close()
    assert not model.model.language_model.layers[0]._forward_hooks


@pytest.fixture(scope="module")
def slice1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from egovlm.models.build import build_slice3b

    return build_slice3b(tmp_path_factory.mktemp("slice") / "s1", 1)


@pytest.mark.slow
def test_slice_latency_smoke_projects_and_compares_attention(slice1: Path, tmp_path: Path) -> None:
    report = latency.run(
        tmp_path,
        slice1,
        (1, 2),
        repeats=1,
        scratch_repeats=1,
        fresh_repeats=1,
        warmup=1,
        max_new_tokens=3,
        compare_attention=True,
        part="latency_slice",
    )
    assert (tmp_path / "latency_slice.json").is_file() and (tmp_path / "latency_slice.md").is_file()
    assert report.params["real_layers"] == [36, 32]
    modes = {(r["k"], r["mode"]) for r in report.rows}
    assert modes == {(k, m) for k in (1, 2) for m in ("cached", "scratch", "cached, stock sdpa")}
    for r in report.rows:
        assert r["greedy_tokens_identical"] is True
        assert r["ttft_ms_projected"] > r["ttft_ms_median"]  # 36 layers cost more than 1
        assert 0 < r["prefill_ms_per_layer"] < r["ttft_ms_median"]
    cached = [r for r in report.rows if r["mode"] == "cached"]
    assert all(r["rebuild_ms_projected"] > r["new_keyframe_rebuild_ms"] for r in cached)
    metrics = [s["metric"] for s in report.summary]
    assert any("PROJECTION" in m for m in metrics) and any("stock sdpa" in m for m in metrics)
