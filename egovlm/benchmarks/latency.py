"""Time to first token with the cached visual prefix vs re-encoding everything per question.

For each buffer size K, an :class:`egovlm.edge.engine.Engine` holds K keyframes with its state
warm; the same question is then asked with ``use_cache=True`` (only the question's tokens are
prefilled on top of the cached [system + frames] KV) and ``use_cache=False`` (what a plain
transformers script does: image preprocessing, vision encoder on all K frames, full prefill).
K values are measured interleaved, repeat by repeat, so machine noise hits them alike; medians
and p95 over the repeats are reported. Greedy tokens of the two paths are checked identical.

Targets (issue 6): cached TTFT at K=32 <= 1.5 x cached at K=1; scratch / cached at K=32 >= 10.

    python -m egovlm.benchmarks.latency --out bench            # builds the offline small model
    python -m egovlm.benchmarks.latency --model DIR --k 1 8 32 --repeats 15 --threads 1
    python -m egovlm.benchmarks.latency --backend onnx --model EXPORT_DIR --k 1 8   # ONNX Runtime
    python -m egovlm.benchmarks.latency --model SLICE --k 1 8 16 32 --slice   # 3B-shaped slice

At a slice of the real model (``egovlm model slice3b``: the real widths, a few layers), the torch
backend also times every decoder layer and vision block (:class:`LayerTimer`), and projects each
time to the real model's depth (``slice.json``): measured + per-layer time x (real layers - slice
layers). With ``compare_attention`` the cached question is also asked with transformers' stock
``sdpa`` attention (what the torch backend used before :func:`~egovlm.edge.backends.torch_backend.
grouped_query_sdpa`), interleaved with the current one, so the design change's effect is measured in
the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.benchmarks.report import Report, percentiles
from egovlm.edge.profile import KNOWN_MODELS, ModelDims, load_profile

QUESTION = "What did I pick up just before I left the kitchen?"
OPTIONS = {"A": "the red cup", "B": "the keys", "C": "a book", "D": "the phone", "E": "nothing"}
TARGET_FLAT = 1.5  # cached TTFT at the largest K / at the smallest K, at most
TARGET_SPEEDUP = 10.0  # scratch TTFT / cached TTFT at the largest K, at least


def _images(n: int, seed: int) -> list[np.ndarray]:
    """Distinct 320x240 frames (blocky random scenes), so no keyframe is redundant."""
    rng = np.random.default_rng(seed)
    return [
        np.kron(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8), np.ones((15, 16, 1), np.uint8))
        for _ in range(n)
    ]


def _engine(backend: Any, k: int, seed: int) -> tuple[Any, dict[str, float]]:
    from egovlm.edge.buffer import KeyframeBuffer
    from egovlm.edge.engine import Engine, EngineParams

    engine = Engine(backend, KeyframeBuffer(capacity=k), EngineParams())
    for i, img in enumerate(_images(k, seed)):
        engine.add_keyframe(1.0 + 2.0 * i, img)
    calls = backend.vision_calls
    t0 = time.perf_counter()
    engine.refresh()
    build_ms = (time.perf_counter() - t0) * 1000
    assert backend.vision_calls - calls == k, "each keyframe must be encoded exactly once"
    assert len(engine.buffer) == k
    return engine, {"state_build_ms": build_ms}


def _freshness(
    engine: Any, k: int, seed: int, n: int = 3, timer: LayerTimer | None = None
) -> dict[str, float]:
    """A new keyframe arrives in a full buffer (one is evicted): time until the model state
    includes it (vision for the new frame + prefill of the tokens after the first change)."""
    times, reused, projected = [], [], []
    for j, img in enumerate(_images(n, seed + 1000)):
        engine.add_keyframe(1.0 + 2.0 * (k + j), img)
        timing: contextlib.AbstractContextManager[dict[str, float]]
        timing = timer.measure() if timer else contextlib.nullcontext({})
        with timing as phases:
            t0 = time.perf_counter()
            state = engine.refresh()
            times.append((time.perf_counter() - t0) * 1000)
        reused.append(state.reused_tokens / state.n_tokens)
        if timer is not None:
            projected.append(timer.project(times[-1], phases["prefill"], phases["vision"]))
    out = {"new_keyframe_rebuild_ms": float(np.median(times)), "reused_fraction": float(np.mean(reused))}
    if projected:
        out["rebuild_ms_projected"] = float(np.median(projected))
    return out


class LayerTimer:
    """Wall time inside each decoder layer and vision block of a torch model, by phase (forward
    hooks), to split a measured time into per-layer and fixed parts and project it to the real
    model's depth. Phases: ``prefill`` (a decoder call on more than one token), ``decode`` (one
    token), ``vision`` (ViT blocks). Hooks add a few microseconds per layer call."""

    def __init__(self, model: Any, real_layers: int, real_blocks: int) -> None:
        self.layers = list(model.model.language_model.layers)
        self.blocks = list(model.model.visual.blocks)
        self.real_layers, self.real_blocks = real_layers, real_blocks
        self._phases: dict[str, float] | None = None
        self._started: dict[int, float] = {}
        self._handles = [
            m.register_forward_pre_hook(self._pre, with_kwargs=True) for m in self.layers + self.blocks
        ]
        self._handles += [m.register_forward_hook(self._post(False), with_kwargs=True) for m in self.layers]
        self._handles += [m.register_forward_hook(self._post(True), with_kwargs=True) for m in self.blocks]

    def _pre(self, module: Any, args: Any, kwargs: Any) -> None:
        self._started[id(module)] = time.perf_counter()

    def _post(self, vision: bool) -> Any:
        def hook(module: Any, args: Any, kwargs: Any, output: Any) -> None:
            if self._phases is None:
                return
            dt = (time.perf_counter() - self._started.pop(id(module))) * 1000
            hidden = args[0] if args else kwargs["hidden_states"]
            phase = "vision" if vision else ("prefill" if hidden.shape[1] > 1 else "decode")
            self._phases[phase] += dt
            self._phases[phase + "_calls"] += 1

        return hook

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        """Collect the layer times of the calls made inside the block into the yielded dict."""
        self._phases = dict.fromkeys(("prefill", "decode", "vision"), 0.0)
        self._phases |= {k + "_calls": 0.0 for k in ("prefill", "decode", "vision")}
        try:
            yield self._phases
        finally:
            self._phases = None

    def project(self, measured_ms: float, text_ms: float, vision_ms: float = 0.0) -> float:
        """``measured_ms``, of which ``text_ms`` was in decoder layers and ``vision_ms`` in vision
        blocks, at the real layer counts: the fixed part (embedding, LM head, prompt, sampling,
        patch embedding, merger) stays, the layers' part scales with their number."""
        text_scale = self.real_layers / len(self.layers) - 1
        vision_scale = self.real_blocks / len(self.blocks) - 1
        return measured_ms + text_ms * text_scale + vision_ms * vision_scale

    def close(self) -> None:
        for h in self._handles:
            h.remove()


@contextlib.contextmanager
def stock_attention(backend: Any) -> Iterator[None]:
    """The torch backend's language model on transformers' own ``sdpa`` (repeat_kv before a masked
    attention) for the block: the design before grouped_query_sdpa, for a same-run comparison."""
    from egovlm.edge.backends.torch_backend import GQA_ATTENTION

    backend.model.set_attn_implementation({"text_config": "sdpa"})
    try:
        yield
    finally:
        backend.model.set_attn_implementation({"text_config": GQA_ATTENTION})


Sample = tuple[Any, dict[str, float] | None]  # an Answer and its layer times (LayerTimer), if timed


def _summarise(samples: list[Sample], timer: LayerTimer | None) -> dict[str, Any]:
    answers = [a for a, _ in samples]
    ttft = percentiles([a.latency.ttft_ms for a in answers])
    prefill = percentiles([a.latency.prefill_ms for a in answers])
    prepare = percentiles([a.latency.prepare_ms for a in answers])
    last = answers[-1].latency
    row = {
        "ttft_ms_median": ttft[0],
        "ttft_ms_p95": ttft[1],
        "prefill_ms_median": prefill[0],
        "prepare_ms_median": prepare[0],
        "decode_tok_s_median": float(np.median([a.latency.decode_tok_s for a in answers])),
        "prompt_tokens": last.n_prompt_tokens,
        "prefill_tokens": last.n_prefill_tokens,
        "repeats": len(answers),
    }
    if timer is not None:
        row |= _projected(samples, timer)
    return row


def _projected(samples: list[Sample], timer: LayerTimer) -> dict[str, float]:
    """Medians over the samples of: one decoder layer's share of the prefill, TTFT and ms per decoded
    token at the real depth."""
    n = len(timer.layers)
    layer, ttft, tok = [], [], []
    for a, ph in samples:
        assert ph is not None
        lat = a.latency
        layer.append(ph["prefill"] / n)
        ttft.append(timer.project(lat.ttft_ms, ph["prefill"], ph["vision"]))
        steps = ph["decode_calls"] / n
        if steps and lat.n_new_tokens > 1:
            tok.append(timer.project(lat.decode_ms / (lat.n_new_tokens - 1), ph["decode"] / steps))
    out = {"prefill_ms_per_layer": float(np.median(layer)), "ttft_ms_projected": float(np.median(ttft))}
    if tok:
        out["decode_tok_s_projected"] = 1000 / float(np.median(tok))
    return out


def _ask(engine: Any, timer: LayerTimer | None, **kw: Any) -> Sample:
    if timer is None:
        return engine.ask(QUESTION, OPTIONS, **kw), None
    with timer.measure() as phases:
        answer = engine.ask(QUESTION, OPTIONS, **kw)
    return answer, dict(phases)


def _layer_timer(backend: Any, model: Path | None) -> LayerTimer | None:
    """A timer when ``model`` is a slice of a deeper model (``slice.json``) run by the torch backend."""
    from egovlm.models.presets import SLICE_META, real_layer_counts

    if backend.name != "torch" or model is None or not (Path(model) / SLICE_META).is_file():
        return None
    real = real_layer_counts(model)
    return LayerTimer(backend.model, real.text, real.vision)


def run(
    out: Path,
    model: Path | None = None,
    ks: Sequence[int] = (1, 32),
    repeats: int = 11,
    scratch_repeats: int = 5,
    max_new_tokens: int = 8,
    threads: int | None = 1,
    warmup: int = 2,
    backend_kind: str = "torch",
    fresh_repeats: int = 3,
    compare_attention: bool = False,
    part: str = "latency",
) -> Report:
    """Measure and write ``out/latency.{json,md}``; returns the report. ``backend_kind`` ``onnx``
    runs an export folder (``model``) with ONNX Runtime. The from-scratch path is warmed up at the
    smallest K only (the same kernels run at every K; a warm-up at K=32 of a 3B-shaped slice costs
    minutes). ``compare_attention`` (torch): also ask with the stock attention at the smallest and
    largest K (see the module docstring). ``part``: the report's name (``latency_slice`` for a slice,
    so both can sit in one folder)."""
    backend = _load_backend(backend_kind, model, threads)
    timer = _layer_timer(backend, model)
    compare_attention = compare_attention and backend.name == "torch"
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    engines = {k: _engine(backend, k, seed=k) for k in ks}
    cached: dict[int, list[Sample]] = {k: [] for k in ks}
    scratch: dict[int, list[Sample]] = {k: [] for k in ks}
    stock: dict[int, list[Sample]] = {k: [] for k in (min(ks), max(ks))} if compare_attention else {}
    ask = dict(max_new_tokens=max_new_tokens)
    for k in ks:  # warm-up: allocator, kernels, tokenizer caches
        for _ in range(warmup):
            engines[k][0].ask(QUESTION, OPTIONS, **ask)
    engines[min(ks)][0].ask(QUESTION, OPTIONS, use_cache=False, **ask)
    for r in range(repeats):
        for k in ks:
            cached[k].append(_ask(engines[k][0], timer, **ask))
            if k in stock:
                with stock_attention(backend):
                    stock[k].append(_ask(engines[k][0], timer, **ask))
            if r < scratch_repeats:
                scratch[k].append(_ask(engines[k][0], timer, use_cache=False, **ask))
    fresh = {k: _freshness(engines[k][0], k, seed=k, n=fresh_repeats, timer=timer) for k in ks}
    load_after = os.getloadavg()
    if timer is not None:
        timer.close()

    report = Report(
        part,
        params={
            "model": str(model) if model else "offline small preset (egovlm model small, seed 0)",
            "backend": backend.describe(),
            "ks": list(ks),
            "repeats": repeats,
            "scratch_repeats": scratch_repeats,
            "max_new_tokens": max_new_tokens,
            "question": QUESTION,
            "real_layers": [timer.real_layers, timer.real_blocks] if timer else None,
            "seconds": round(time.perf_counter() - t_start, 1),
            "loadavg_before": list(load_before),
            "loadavg_after": list(load_after),
        },
    )
    for k in ks:
        same = all(c.token_ids == scratch[k][0][0].token_ids for c, _ in cached[k])
        modes = [("cached", cached[k]), ("scratch", scratch[k])]
        modes += [("cached, stock sdpa", stock[k])] if k in stock else []
        for mode, samples in modes:
            row = {"k": k, "mode": mode, **_summarise(samples, timer)}
            if mode == "cached":
                row |= {key: round(v, 1) for key, v in engines[k][1].items()}
                row |= {key: round(v, 2) for key, v in fresh[k].items()}
            row["greedy_tokens_identical"] = (
                same
                if mode != "cached, stock sdpa"
                else all(c.token_ids == scratch[k][0][0].token_ids for c, _ in samples)
            )
            report.rows.append(row)
    report.summary = _targets(report.rows, ks, "ttft_ms_median")
    if timer is not None:
        report.summary += _targets(report.rows, ks, "ttft_ms_projected", projected=True)
    if stock:
        report.summary += _targets(report.rows, ks, "ttft_ms_median", mode="cached, stock sdpa")[:1]
    report.summary += _arithmetic(backend, report.rows, ks)
    report.notes += [
        "TTFT = queue + prompt preparation + prefill up to the first token, measured in Engine.ask.",
        "cached: the prefix KV for [system + K frames] was built before the question (state_build_ms);"
        " the question prefills only its own tokens.",
        "new_keyframe_rebuild_ms: a keyframe arrives in the full buffer (one is evicted for redundancy);"
        " the rebuild reuses the KV up to the first changed frame (reused_fraction of the prefix).",
        "scratch: processor + vision encoder on all K frames + full prefill at question time.",
        f"{backend.name} intra-op threads: {backend.describe()['threads']}, dtype "
        f"{backend.describe().get('dtype', 'as exported')}; load average before/after "
        f"{load_before[0]:.1f}/{load_after[0]:.1f} (a shared machine inflates and spreads timings).",
    ]
    if timer is not None:
        report.notes.append(
            f"*_projected: PROJECTION to the real depth ({timer.real_layers} decoder layers, "
            f"{timer.real_blocks} vision blocks) from this {len(timer.layers)}-layer / {len(timer.blocks)}"
            "-block slice: each sample's time spent inside decoder layers (and vision blocks) is scaled by"
            " real / slice layers, the rest (embedding, LM head, prompt, sampling) kept; not a measurement"
            " of the full model. prefill_ms_per_layer: one decoder layer's share of the prefill."
        )
    if stock:
        report.notes.append(
            "cached, stock sdpa: the same cached question with transformers' stock sdpa attention (repeats"
            " K and V per query head before a masked attention: the torch backend's attention before"
            " grouped_query_sdpa), interleaved with the current one."
        )
    report.write(out)
    from egovlm.benchmarks.plots import write_plots

    write_plots(report, out)
    return report


def _load_backend(kind: str, model: Path | None, threads: int | None) -> Any:
    if kind in {"onnx", "tensorrt"}:
        from egovlm.edge.backends import create_backend

        if model is None:
            raise ValueError(f"--backend {kind} needs --model EXPORT_DIR (egovlm export --model M --out DIR)")
        return create_backend(kind, model, device="cpu" if kind == "onnx" else "cuda", threads=threads)
    if kind != "torch":
        raise ValueError(f"unknown backend {kind!r}; choose torch, onnx or tensorrt")
    from egovlm.edge.backends.torch_backend import TorchBackend
    from egovlm.models.build import build_model

    with tempfile.TemporaryDirectory(prefix="egovlm-latency-") as tmp:
        path = model or build_model("small", Path(tmp) / "small", seed=0)
        return TorchBackend.load(path, threads=threads)


def flops_per_token(dims: ModelDims, context: int) -> float:
    """Decoder FLOPs for one new token attending to ``context`` tokens: weight matmuls (q, k, v,
    o, SwiGLU, LM head) plus attention (QK^T and AV over the context)."""
    h, kv = dims.hidden, dims.kv_heads * dims.head_dim
    weights = 2 * dims.layers * (2 * h * h + 2 * h * kv + 3 * h * dims.intermediate) + 2 * h * dims.vocab
    attention = 4 * dims.layers * context * dims.heads * dims.head_dim
    return float(weights + attention)


def arithmetic_ratio(dims: ModelDims, question_tokens: int, prefix_lo: int, prefix_hi: int) -> float:
    """The cached-TTFT ratio compute alone implies: the question's prefill over the large prefix
    vs over the small one (what no implementation can beat while staying exact)."""

    def prefill(prefix: int) -> float:
        return sum(flops_per_token(dims, prefix + i + 1) for i in range(question_tokens))

    return prefill(prefix_hi) / prefill(prefix_lo)


def _targets(
    rows: list[dict[str, Any]],
    ks: Sequence[int],
    column: str,
    projected: bool = False,
    mode: str = "cached",
) -> list[dict[str, Any]]:
    """The two targets from ``column`` (``ttft_ms_median``, or ``ttft_ms_projected`` for the real
    depth) of ``mode``'s rows (the scratch side is always ``scratch``)."""

    def ttft(k: int, m: str) -> float:
        return float(next(r[column] for r in rows if r["k"] == k and r["mode"] == m))

    lo, hi = min(ks), max(ks)
    flat = ttft(hi, mode) / ttft(lo, mode)
    speedup = ttft(hi, "scratch") / ttft(hi, mode)
    label = " (PROJECTION, real depth)" if projected else ""
    label += f" ({mode})" if mode != "cached" else ""
    return [
        {
            "metric": f"cached TTFT K={hi} / K={lo}{label}",
            "value": round(flat, 2),
            "target": f"<= {TARGET_FLAT}",
            "met": flat <= TARGET_FLAT,
        },
        {
            "metric": f"scratch / cached TTFT at K={hi}{label}",
            "value": round(speedup, 1),
            "target": f">= {TARGET_SPEEDUP}",
            "met": speedup >= TARGET_SPEEDUP,
        },
    ]


def _arithmetic(backend: Any, rows: list[dict[str, Any]], ks: Sequence[int]) -> list[dict[str, Any]]:
    """Compute-only floors of the flatness ratio: for this model, and for Qwen2.5-VL-3B with the
    agx-orin profile's keyframe size (same prompt text, its visual tokens per frame)."""
    lo, hi = min(ks), max(ks)
    cached = {r["k"]: r for r in rows if r["mode"] == "cached"}
    q = int(cached[hi]["prefill_tokens"])
    p_lo, p_hi = (int(cached[k]["prompt_tokens"]) - q for k in (lo, hi))
    per_frame = (p_hi - p_lo) / max(hi - lo, 1)
    w, h = backend.keyframe_size
    text_per_frame = per_frame - (w // 28) * (h // 28)
    base = p_lo - lo * per_frame  # system prompt and chat scaffolding
    prof = load_profile("agx-orin")
    per_frame_3b = prof.keyframes.tokens_per_keyframe + text_per_frame
    here = arithmetic_ratio(ModelDims.from_config(backend.config), q, p_lo, p_hi)
    big = arithmetic_ratio(
        KNOWN_MODELS["qwen2.5-vl-3b"], q, int(base + lo * per_frame_3b), int(base + hi * per_frame_3b)
    )
    size = "x".join(str(v) for v in prof.keyframes.size)
    return [
        {"metric": "compute-only floor of that ratio, this model", "value": round(here, 2)},
        {"metric": f"compute-only floor, Qwen2.5-VL-3B, {size} keyframes", "value": round(big, 2)},
    ]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench"))
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: build the small preset)")
    ap.add_argument(
        "--backend",
        choices=["torch", "onnx", "tensorrt"],
        default="torch",
        help="onnx, tensorrt: --model is an export",
    )
    ap.add_argument("--k", type=int, nargs="+", default=[1, 32], help="buffer sizes to compare")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--scratch-repeats", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: library default)")
    a = ap.parse_args(argv)
    report = run(
        a.out,
        a.model,
        a.k,
        a.repeats,
        a.scratch_repeats,
        a.max_new_tokens,
        a.threads or None,
        backend_kind=a.backend,
    )
    print(report.markdown())


if __name__ == "__main__":
    main()
