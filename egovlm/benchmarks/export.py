"""PyTorch vs ONNX Runtime at fp32 / int8 / int4: decoder size, per-token decode time, parity.

One model is exported at each precision (``egovlm.export.pipeline.run_export``, one thread),
then every implementation answers the same prompt (2 keyframes + a question) side by side in
this run, interleaved repeat by repeat so machine noise hits them alike:

* ``torch`` — ``model.generate`` (greedy, KV cache); a logits processor stamps the time of each
  new token, so prefill (vision + prompt) and every decode step are timed individually;
* ``onnx-<precision>`` — :class:`egovlm.export.ort_runner.VLMRunner`: vision + ``extend`` is the
  prefill, each ``step`` one decode step.

Sizes are the decoder files on disk (torch: the language model's parameter bytes); parity
(logit cosine, top-1 agreement vs torch) comes from each export's own report. Target (issue 8):
int4 decoder ≤ 0.3x the fp32 size with top-1 agreement ≥ 0.9.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.benchmarks.latency import OPTIONS, QUESTION
from egovlm.benchmarks.report import Report, percentiles

PRECISIONS = ("fp32", "int8", "int4")
TARGET_INT4_SIZE = 0.3  # int4 decoder bytes / fp32 decoder bytes, at most
TARGET_INT4_TOP1 = 0.9  # int4 top-1 agreement with torch, at least


def _frames(n: int = 2, seed: int = 0) -> list[Any]:
    from egovlm.frames import frame_set

    rng = np.random.default_rng(seed)
    images = [
        np.kron(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8), np.ones((15, 16, 1), np.uint8))
        for _ in range(n)
    ]
    return frame_set(images, [1.0 + 2.0 * i for i in range(n)])


class TorchImpl:
    """``model.generate`` timed per token by a logits processor (called once per new token)."""

    name = "torch"

    def __init__(self, model_dir: Path) -> None:
        from PIL import Image

        from egovlm.contract import build_messages
        from egovlm.frames import resize_for_model
        from egovlm.models import load_model

        self.loaded = load_model(str(model_dir))
        self.loaded.model.eval()
        frames = _frames()
        proc = self.loaded.processor
        text = proc.apply_chat_template(
            build_messages(frames, QUESTION, OPTIONS), add_generation_prompt=True, tokenize=False
        )
        images = [Image.fromarray(resize_for_model(f.image, self.loaded.keyframe_size)) for f in frames]
        self.inputs = proc(text=[text], images=images, return_tensors="pt")

    def decoder_bytes(self) -> int:
        """Language model + LM head parameter bytes (what the ONNX decoder graph holds)."""
        return sum(
            p.numel() * p.element_size()
            for name, p in self.loaded.model.named_parameters()
            if "visual" not in name
        )

    def run(self, new_tokens: int) -> tuple[float, list[float]]:
        """(prefill seconds incl. vision, [seconds per decode step])."""
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList

        stamps: list[float] = []

        class Stamp(LogitsProcessor):
            def __call__(self, input_ids: Any, scores: Any) -> Any:
                stamps.append(time.perf_counter())
                return scores

        t0 = time.perf_counter()
        with torch.inference_mode():
            self.loaded.model.generate(
                **self.inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([Stamp()]),
            )
        return stamps[0] - t0, list(np.diff(stamps))


class OrtImpl:
    """An export run with ONNX Runtime: vision + prefill, then each decode step timed."""

    def __init__(self, export_dir: Path, precision: str, threads: int) -> None:
        from egovlm.contract import build_messages
        from egovlm.export.ort_runner import VLMRunner

        self.name = f"onnx-{precision}"
        self.dir = export_dir
        self.runner = VLMRunner.from_export(export_dir, threads=threads)
        self.frames = _frames()
        self.ids = self.runner.prompt_ids(build_messages(self.frames, QUESTION, OPTIONS))

    def decoder_bytes(self) -> int:
        """decoder.onnx plus any external-data files next to it."""
        return sum(p.stat().st_size for p in self.dir.iterdir() if p.name.startswith("decoder"))

    def run(self, new_tokens: int) -> tuple[float, list[float]]:
        r = self.runner
        t0 = time.perf_counter()
        visual = [r.encode_keyframe(f.image) for f in self.frames]
        state = r.extend(r.empty_state(), self.ids, visual)
        prefill = time.perf_counter() - t0
        steps = []
        for _ in range(new_tokens - 1):  # the first token comes from the prefill's logits
            assert state.logits is not None
            token = int(np.argmax(state.logits))
            t0 = time.perf_counter()
            state = r.step(state, token)
            steps.append(time.perf_counter() - t0)
        return prefill, steps


def _export_all(model_dir: Path, root: Path, precisions: tuple[str, ...], quick: bool) -> dict[str, Any]:
    from egovlm.export.pipeline import ExportOptions, run_export

    results = {}
    for prec in precisions:
        opts = ExportOptions(
            model=str(model_dir),
            out=root / prec,
            precision=prec,
            threads=1,
            parity_prompts=2 if quick else 4,
            max_new_tokens=8 if quick else 24,
        )
        results[prec] = run_export(opts)
    return results


def run(
    out: Path,
    model: Path | None = None,
    quick: bool = False,
    precisions: tuple[str, ...] = PRECISIONS,
    repeats: int | None = None,
    new_tokens: int = 16,
    threads: int = 1,
) -> Report:
    """Export ``model`` (default: the offline small preset; tiny when ``quick``) at each precision,
    time all implementations side by side, write ``out/export.{json,md,png}``."""
    import torch

    torch.set_num_threads(threads)
    repeats = repeats or (5 if quick else 15)
    with tempfile.TemporaryDirectory(prefix="egovlm-bench-export-") as tmp:
        root = Path(tmp)
        preset = "tiny" if quick else "small"
        if model is None:
            from egovlm.models.build import build_model

            model = build_model(preset, root / preset, seed=0)
        exports = _export_all(model, root / "exports", precisions, quick)
        impls: list[Any] = [TorchImpl(model)]
        impls += [OrtImpl(exports[p].out, p, threads) for p in precisions]
        load_before = os.getloadavg()
        samples = _measure(impls, repeats, new_tokens)
        load_after = os.getloadavg()
        report = Report(
            "export",
            params={
                "model": str(model) if model.parent != root else f"offline {preset} preset (seed 0)",
                "precisions": list(precisions),
                "repeats": repeats,
                "new_tokens": new_tokens,
                "threads": threads,
                "question": QUESTION,
                "loadavg_before": list(load_before),
                "loadavg_after": list(load_after),
            },
        )
        report.rows = [_row(impl, samples[impl.name], exports) for impl in impls]
    report.summary = _summary(report.rows)
    report.notes += [
        "prefill = vision encoder on 2 keyframes + prompt prefill up to the first token's logits.",
        "ms_per_token: each decode step timed on its own (torch: between logits-processor calls"
        " inside generate; ONNX Runtime: VLMRunner.step), pooled over repeats after one warm-up.",
        "parity: from each export's report (teacher-forced logits vs PyTorch on its parity prompts).",
        f"threads={threads}; load average before/after {load_before[0]:.1f}/{load_after[0]:.1f}.",
    ]
    report.write(out)
    from egovlm.benchmarks.plots import write_plots

    write_plots(report, out)
    return report


def _measure(impls: list[Any], repeats: int, new_tokens: int) -> dict[str, dict[str, list[float]]]:
    for impl in impls:  # warm-up
        impl.run(new_tokens)
    samples: dict[str, dict[str, list[float]]] = {i.name: {"prefill": [], "steps": []} for i in impls}
    for _ in range(repeats):
        for impl in impls:
            prefill, steps = impl.run(new_tokens)
            samples[impl.name]["prefill"].append(prefill)
            samples[impl.name]["steps"] += steps
    return samples


def _row(impl: Any, s: dict[str, list[float]], exports: dict[str, Any]) -> dict[str, Any]:
    step = percentiles([x * 1000 for x in s["steps"]])
    row: dict[str, Any] = {
        "impl": impl.name,
        "decoder_mb": impl.decoder_bytes() / 1e6,
        "ms_per_token_p50": step[0],
        "ms_per_token_p95": step[1],
        "prefill_ms_p50": percentiles([x * 1000 for x in s["prefill"]])[0],
        "logit_cosine_mean": 1.0,
        "top1_agree": 1.0,
    }
    if impl.name != "torch":
        metrics = exports[impl.name.removeprefix("onnx-")].report["parity"]["metrics"]
        row["logit_cosine_mean"] = float(metrics["logits_cosine_mean"])
        row["top1_agree"] = float(metrics["top1_agreement"])
    return row


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {r["impl"]: r for r in rows}
    base = by["torch"]
    out: list[dict[str, Any]] = []
    for r in rows[1:]:
        out += [
            {"metric": f"{r['impl']} decoder size / torch", "value": r["decoder_mb"] / base["decoder_mb"]},
            {
                "metric": f"{r['impl']} decode speed-up vs torch",
                "value": base["ms_per_token_p50"] / r["ms_per_token_p50"],
            },
            {
                "metric": f"{r['impl']} prefill speed-up vs torch",
                "value": base["prefill_ms_p50"] / r["prefill_ms_p50"],
            },
        ]
    if "onnx-int4" in by and "onnx-fp32" in by:
        ratio = by["onnx-int4"]["decoder_mb"] / by["onnx-fp32"]["decoder_mb"]
        top1 = by["onnx-int4"]["top1_agree"]
        out += [
            {
                "metric": "int4 decoder size / fp32",
                "value": ratio,
                "target": f"<= {TARGET_INT4_SIZE}",
                "met": ratio <= TARGET_INT4_SIZE,
            },
            {
                "metric": "int4 top-1 agreement with torch",
                "value": top1,
                "target": f">= {TARGET_INT4_TOP1}",
                "met": top1 >= TARGET_INT4_TOP1,
            },
        ]
    return out
