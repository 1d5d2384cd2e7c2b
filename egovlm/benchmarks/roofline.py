"""The physical limit of this machine, measured in the same run, and how close the model gets to it.

Two ceilings, each measured here rather than taken from a data sheet:

* **memory bandwidth**: a STREAM-like kernel (McCalpin's Copy and Add, on numpy arrays far larger
  than the last-level cache), best of several passes, on one thread (the benchmarks' setting) and on
  every core (numpy releases the GIL inside a ufunc, so threads over disjoint slices run in parallel);
* **matmul throughput**: ``torch.matmul`` in fp32 on one thread at the decoder's own GEMM shapes.

A decode step is memory-bound: every weight of the decoder and the LM head, and the whole KV cache,
is read once per token, so ``bytes per token / bandwidth`` is the shortest a step can take. A prefill
of M tokens does 2 x M FLOPs per weight and is compute-bound above a few tokens, so ``FLOPs /
GEMM throughput`` is its shortest. The fraction ``shortest / measured`` (1.0 = at the limit) cannot
exceed 1 unless a number is wrong; :func:`fraction` flags that instead of printing it as a result.

Bytes come from :mod:`egovlm.export.fit` (the export's accounting, checked against real checkpoint
headers in tests/export/test_fit.py) or from the measured graph files; FLOPs from the dims.

    python -m egovlm.benchmarks.roofline --model SLICE_DIR --out bench   # see egovlm/benchmarks/README.md
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.benchmarks.latency import OPTIONS, QUESTION
from egovlm.benchmarks.report import Report, percentiles
from egovlm.export.fit import ModelDims, TensorShape, read_tensors, weight_bytes

ORT_PRECISIONS = ("fp32", "int8", "int4")


# -- arithmetic -------------------------------------------------------------------------------------


def layer_weight_params(dims: ModelDims) -> int:
    """Matmul weights of one decoder layer (q, k, v, o and the SwiGLU MLP); biases and norms are
    <0.1 % and left out of the FLOP count (they are in the byte count through :mod:`fit`)."""
    h, kv = dims.hidden, dims.kv_heads * dims.head_dim
    return 2 * h * h + 2 * h * kv + 3 * h * dims.intermediate


def attention_flops(dims: ModelDims, context: int) -> int:
    """QK^T and AV of one new token over ``context`` tokens, all layers: 2 x 2 x context x heads x d."""
    return 4 * dims.layers * context * dims.heads * dims.head_dim


def prefill_flops(dims: ModelDims, new_tokens: int, past: int) -> float:
    """FLOPs of prefilling ``new_tokens`` after ``past`` cached tokens up to the first token's logits:
    the layers' matmuls for every new token, causal attention (token i sees past + i + 1), and the LM
    head once (only the last position's logits are computed: ``logits_to_keep=1``)."""
    weights = 2 * dims.layers * layer_weight_params(dims) * new_tokens
    attention = sum(attention_flops(dims, past + i + 1) for i in range(new_tokens))
    return float(weights + attention + 2 * dims.hidden * dims.vocab)


def decode_weight_bytes(tensors: Sequence[TensorShape], runtime: str, precision: str) -> int:
    """Weight bytes a decode step reads, from the export's accounting: the decoder graph (layers,
    final norm, LM head); a tied head on torch is the embedding matrix itself, read whole (only one
    embedding row is looked up, but the head multiplies by all of it)."""
    w = weight_bytes(tensors, runtime, precision)
    head = w.graphs["embed"].device if (w.tied and runtime == "torch") else 0
    return w.graphs["decoder"].device + head


def kv_read_bytes(dims: ModelDims, context: int, precision: str) -> float:
    """KV cache read by one decode step attending over ``context`` tokens."""
    return dims.kv_bytes_per_token(precision) * context


@dataclass(frozen=True)
class Fraction:
    """Roofline time over measured time; ``suspect`` when above 1 (faster than physics allows: the
    bytes or FLOPs are overcounted, or the timing is wrong)."""

    value: float
    suspect: bool

    def cell(self, above: str = "measurement error?") -> str:
        """The value, with ``above`` (why it could exceed 1) when it does."""
        return f"{self.value:.2f} (>1: {above})" if self.suspect else f"{self.value:.2f}"


def fraction(bound_s: float, measured_s: float) -> Fraction:
    if measured_s <= 0:
        raise ValueError(f"measured time must be positive, got {measured_s}")
    value = bound_s / measured_s
    return Fraction(value, value > 1.0)


# -- the two ceilings -------------------------------------------------------------------------------


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """STREAM reports the best pass: the others include page faults, interrupts, neighbours."""
    fn()  # first touch: page faults
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def stream_bandwidth(threads: int, mib: int = 256, repeats: int = 5) -> dict[str, float]:
    """GB/s of STREAM Copy (a = b: 16 bytes per float64 element) and Add (a = b + c: 24 bytes),
    counted as STREAM counts them (no write-allocate traffic), on ``threads`` threads each working
    on its own slice. ``mib`` per array; keep it far above the last-level cache (tens of MB)."""
    n = mib * 2**20 // 8
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)
    bounds = np.linspace(0, n, threads + 1).astype(int)
    slices = [slice(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds)]
    with ThreadPoolExecutor(threads) as pool:

        def each(kernel: Callable[[slice], object]) -> Callable[[], object]:
            return lambda: list(pool.map(kernel, slices))

        copy = _best_seconds(each(lambda s: np.copyto(a[s], b[s])), repeats)
        add = _best_seconds(each(lambda s: np.add(b[s], c[s], out=a[s])), repeats)
    return {"copy_gbs": 16 * n / copy / 1e9, "add_gbs": 24 * n / add / 1e9}


def gemm_shapes(dims: ModelDims, tokens: int) -> dict[str, tuple[int, int, int]]:
    """(M, K, N) of the decoder's matmuls for ``tokens`` tokens at once."""
    h, kv = dims.hidden, dims.kv_heads * dims.head_dim
    return {
        "q/o proj": (tokens, h, h),
        "k/v proj": (tokens, h, kv),
        "mlp up/gate": (tokens, h, dims.intermediate),
        "mlp down": (tokens, dims.intermediate, h),
    }


def gemm_gflops(shape: tuple[int, int, int], repeats: int = 5) -> float:
    """fp32 ``torch.matmul`` GFLOP/s at (M, K, N), best pass, with the process's torch threads."""
    import torch

    m, k, n = shape
    x, w = torch.randn(m, k), torch.randn(k, n)
    return 2 * m * k * n / _best_seconds(lambda: torch.matmul(x, w), repeats) / 1e9


# -- the measured graphs ----------------------------------------------------------------------------


# A performance benchmark of a random-init slice: near-flat logits over 151,936 rows make top-1 a coin
# toss under 4-bit rounding (egovlm/export/README.md, "Graphs past 2 GB"), so int4 is gated on the mean logit
# cosine only, at a bar a wrong mask or position layout still fails. Every export's measured parity is
# in its own report.json.
SLICE_PARITY = {"int4": {"logits_cosine_mean": 0.8, "vision_cosine": 0.999}}


def _thresholds(folder: Path) -> Path:
    """The export's default parity thresholds with :data:`SLICE_PARITY` on top, as a YAML file."""
    import yaml

    from egovlm.export.parity import load_all_thresholds

    merged = load_all_thresholds() | SLICE_PARITY
    path = folder / "slice-parity.yaml"
    path.write_text(yaml.safe_dump(merged))
    return path


def export_slice(model: Path, out: Path, precision: str, threads: int = 1) -> tuple[Path, float]:
    """``egovlm export --target cpu`` in its own process (its memory peak is returned to the OS when it
    exits), one parity prompt of one keyframe, :data:`SLICE_PARITY` thresholds; (folder, seconds).
    Raises with the end of the export's output when it publishes nothing (parity failed, an error)."""
    cmd = [sys.executable, "-m", "egovlm.cli", "export", "--model", str(model), "--out", str(out)]
    cmd += ["--target", "cpu", "--precision", precision, "--threads", str(threads)]
    cmd += ["--prompts", "1", "--frames", "1", "--max-new-tokens", "4"]
    cmd += ["--thresholds", str(_thresholds(out.parent))]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0 or not (out / "manifest.json").is_file():
        tail = (done.stdout + done.stderr)[-1500:]
        raise RuntimeError(f"export of {model} at {precision} failed (exit {done.returncode}): {tail}")
    return out, seconds


def graph_bytes(export_dir: Path, graph: str) -> int:
    """``<graph>.onnx`` plus its external-data files, as on disk."""
    return sum(p.stat().st_size for p in export_dir.iterdir() if p.name.startswith(graph + ".onnx"))


def _measure(engines: dict[str, Any], repeats: int, new_tokens: int) -> dict[str, list[Any]]:
    """Cached questions, backends interleaved repeat by repeat after one warm-up each."""
    for e in engines.values():
        e.ask(QUESTION, OPTIONS, max_new_tokens=new_tokens)
    out: dict[str, list[Any]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, e in engines.items():
            out[name].append(e.ask(QUESTION, OPTIONS, max_new_tokens=new_tokens, do_sample=False))
    return out


def _row(
    name: str,
    answers: list[Any],
    dims: ModelDims,
    weights: int,
    kv_precision: str,
    ceilings: dict[str, float],
) -> dict[str, Any]:
    lat = [a.latency for a in answers]
    ms_tok = float(np.median([1000 / x.decode_tok_s for x in lat if x.decode_tok_s > 0]))
    prefill_ms = percentiles([x.prefill_ms for x in lat])[0]
    last = lat[-1]
    past = last.n_prompt_tokens - last.n_prefill_tokens
    context = last.n_prompt_tokens + last.n_new_tokens // 2  # mean context over the decode steps
    step_bytes = weights + kv_read_bytes(dims, context, kv_precision)
    flops = prefill_flops(dims, last.n_prefill_tokens, past)
    bw, gemm = ceilings["bandwidth_1t_gbs"], ceilings["gemm_1t_gflops"]
    dec = fraction(step_bytes / (bw * 1e9), ms_tok / 1000)
    # the prefill reads the weights once too: the roofline is the larger of its compute and its bytes
    pre_bound = max(flops / (gemm * 1e9), weights / (bw * 1e9))
    pre = fraction(pre_bound, prefill_ms / 1000)
    fp32 = name.endswith("fp32")  # int8 / int4 kernels are measured against the fp32 GEMM ceiling
    return {
        "impl": name,
        "decode_weights_mb": round(weights / 1e6, 1),
        "decode_bytes_per_token_mb": round(step_bytes / 1e6, 1),
        "ms_per_token": round(ms_tok, 1),
        "roofline_ms_per_token": round(step_bytes / (bw * 1e9) * 1000, 1),
        "decode_fraction": dec.cell(),
        "prefill_tokens": last.n_prefill_tokens,
        "prefill_gflop": round(flops / 1e9, 2),
        "prefill_ms": round(prefill_ms, 1),
        "roofline_prefill_ms": round(pre_bound * 1000, 1),
        "prefill_fraction": pre.cell()
        if fp32
        else pre.cell("faster than the fp32 GEMM ceiling: integer kernels"),
    }


def measure_ceilings(
    dims: ModelDims, question_tokens: int, quick: bool
) -> tuple[dict[str, float], list[dict]]:
    """(ceilings, rows): STREAM at 1 and all threads, fp32 GEMM at the decoder's shapes on 1 thread
    (M = the question's tokens, and M = 1: the decode step's GEMV, memory-bound)."""
    import torch

    mib = 64 if quick else 256
    rows: list[dict[str, Any]] = []
    cores = os.cpu_count() or 1
    for t in sorted({1, cores}):
        s = stream_bandwidth(t, mib=mib)
        rows.append({"kernel": f"STREAM copy/add, {t} thread(s), {mib} MiB arrays", **s})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gemm = {}
        for m in (question_tokens, 1):
            for name, shape in gemm_shapes(dims, m).items():
                gemm[(m, name)] = gemm_gflops(shape, repeats=3 if quick else 5)
                rows.append(
                    {
                        "kernel": f"fp32 matmul {name} M={m} K={shape[1]} N={shape[2]}, 1 thread",
                        "gflops": round(gemm[(m, name)], 1),
                    }
                )
    finally:
        torch.set_num_threads(threads)
    one, every = rows[0], rows[len({1, cores}) - 1]  # the same row on a 1-core machine
    ceilings = {
        "bandwidth_1t_gbs": max(one["copy_gbs"], one["add_gbs"]),
        "bandwidth_all_gbs": max(every["copy_gbs"], every["add_gbs"]),
        "gemm_1t_gflops": max(v for (m, _), v in gemm.items() if m == question_tokens),
    }
    return ceilings, rows


def run(
    out: Path,
    model: Path,
    k: int = 8,
    repeats: int = 5,
    new_tokens: int = 8,
    precisions: Sequence[str] = ORT_PRECISIONS,
    exports: Path | None = None,
    quick: bool = False,
    threads: int = 1,
    keep_exports: bool = False,
) -> Report:
    """Ceilings, then torch fp32 and ONNX Runtime at each precision on ``model`` (K keyframes cached,
    the same question), then fractions of the roofline. ``exports``: a folder with ``<precision>/``
    exports to reuse; missing ones are made (in ``exports`` when ``keep_exports``, else in a temporary
    folder) and their wall time recorded."""
    from egovlm.benchmarks.latency import _engine as warm_engine  # K keyframes added, prefix built
    from egovlm.edge.backends import create_backend
    from egovlm.edge.backends.torch_backend import TorchBackend

    load_before = os.getloadavg()
    dims = ModelDims.from_model_dir(model)
    tensors = read_tensors(model)
    tmp = Path(tempfile.mkdtemp(prefix="egovlm-roofline-"))
    try:
        export_s: dict[str, float] = {}
        dirs: dict[str, Path] = {}
        errors: dict[str, str] = {}
        for p in precisions:
            if exports is not None and (exports / p / "manifest.json").is_file():
                dirs[p] = exports / p
                continue
            dest = exports / p if (exports is not None and keep_exports) else tmp / p
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():  # an earlier attempt that published nothing (no manifest): start over
                shutil.rmtree(dest)
            try:
                dirs[p], export_s[p] = export_slice(model, dest, p, threads)
            except RuntimeError as e:
                errors[p] = str(e)
        backends: dict[str, Any] = {"torch-fp32": TorchBackend.load(model, threads=threads)}
        for p, d in dirs.items():
            backends[f"onnx-{p}"] = create_backend("onnx", d, device="cpu", threads=threads)
        engines = {name: warm_engine(b, k, seed=k)[0] for name, b in backends.items()}
        q_tokens = int(
            engines["torch-fp32"].ask(QUESTION, OPTIONS, max_new_tokens=1).latency.n_prefill_tokens
        )
        ceilings, ceiling_rows = measure_ceilings(dims, q_tokens, quick)
        answers = _measure(engines, repeats, new_tokens)
        load_after = os.getloadavg()
        rows = []
        for name, ans in answers.items():
            if name == "torch-fp32":
                weights = decode_weight_bytes(tensors, "torch", "fp32")
            else:
                weights = graph_bytes(dirs[name.removeprefix("onnx-")], "decoder")
            rows.append(_row(name, ans, dims, weights, "fp32", ceilings))
            if name != "torch-fp32":
                p = name.removeprefix("onnx-")
                rows[-1]["fit_predicted_mb"] = round(
                    weight_bytes(tensors, "onnxruntime", p).graphs["decoder"].file / 1e6, 1
                )
                rows[-1]["export_s"] = round(export_s.get(p, float("nan")), 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = Report(
        "roofline",
        params={
            "model": str(model),
            "layers": dims.layers,
            "vision_blocks": dims.vision_depth,
            "k": k,
            "repeats": repeats,
            "new_tokens": new_tokens,
            "threads": threads,
            "ceilings": ceilings,
            "export_errors": errors,
            "loadavg_before": list(load_before),
            "loadavg_after": list(load_after),
        },
    )
    report.rows = rows
    report.summary = ceiling_rows
    report.notes += [
        f"bandwidth ceiling (1 thread, as measured): {ceilings['bandwidth_1t_gbs']:.1f} GB/s; all "
        f"{os.cpu_count()} cores: {ceilings['bandwidth_all_gbs']:.1f} GB/s; fp32 GEMM ceiling (1 thread, "
        f"best decoder shape at M={q_tokens}): {ceilings['gemm_1t_gflops']:.1f} GFLOP/s.",
        "decode: bytes per token = decoder weights as loaded (torch: parameters incl. the tied head; ONNX: "
        "decoder.onnx + its data file, as on disk) + the fp32 KV cache read over the mean context;"
        " fraction = (bytes / 1-thread bandwidth) / measured ms per token.",
        "prefill: the question's tokens on top of the cached [system + K frames] prefix, FLOPs from the dims"
        " (layer matmuls, causal attention, one LM-head row); fraction = max(FLOPs / 1-thread fp32 GEMM,"
        " weight bytes / 1-thread bandwidth) / measured prefill ms. int8/int4 kernels are not fp32"
        " GEMMs: their ceiling differs, the fp32 one is the reference.",
        f"{dims.layers}-layer slice: the LM head (vocab {dims.vocab} x {dims.hidden}) is a larger share"
        " of the bytes than in the full model; egovlm/benchmarks/projection.py scales to the real depth.",
        f"threads={threads}; load average before/after {load_before[0]:.1f}/{load_after[0]:.1f}.",
    ]
    for p, err in errors.items():
        report.notes.append(f"{p}: no export ({err[:300]})")
    report.write(out)
    from egovlm.benchmarks.plots import write_plots

    write_plots(report, out)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench"))
    ap.add_argument("--model", type=Path, required=True, help="a model folder, e.g. `egovlm model slice3b`")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--exports", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    print(run(a.out, a.model, k=a.k, repeats=a.repeats, exports=a.exports, quick=a.quick).markdown())


if __name__ == "__main__":
    main()
