"""PROJECTION for Jetson modules until a device measures it: the bandwidth floor of decoding with
Qwen2.5-VL-3B at each TensorRT precision, next to published figures for comparable models.

A decode step reads every decoder weight (and the LM head) and the whole KV cache once, so no runtime
decodes faster than ``memory bandwidth / bytes per token``; a question (its prefill in chunks of
:data:`egovlm.export.fit.TENSORRT_MAX_CHUNK` tokens, each reading the weights and the prefix KV once,
then the answer's decode steps) cannot take less than ``bytes per question / bandwidth``. Real
runtimes reach 60-90 % of this floor on decode (the published rows below: ``implied_gb_per_token`` =
bandwidth / published tok/s, to compare with our bytes per token). Prefill is compute-bound on these
GPUs and is not projected here.

Bytes come from :func:`egovlm.export.fit.weight_bytes` at the 3B's dims (``KNOWN_MODELS``, whose tensor
list tests/export/test_fit.py holds equal to the real checkpoint's headers) for the ``tensorrt`` runtime
(what the engines hold: fp16 non-linear weights, the LM head unquantised, the tied head a second copy in
the decoder graph), and the KV cache in fp16. The roofline part measures the ONNX Runtime graphs the
export writes at the slice's shape; its ``fit_predicted_mb`` column checks this accounting against them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egovlm.benchmarks.report import Report
from egovlm.export.fit import (
    KNOWN_MODELS,
    LABEL_TOKENS,
    SYSTEM_TOKENS,
    TENSORRT_MAX_CHUNK,
    ModelDims,
    weight_bytes,
)


@dataclass(frozen=True)
class Module:
    name: str
    bandwidth_gbs: float
    memory_gb: float
    precisions: tuple[str, ...]
    source: str


# Published peak DRAM bandwidth per module (NVIDIA data sheets; each source names where the figure was
# read). configs/export/targets.yaml holds 68 for orin-nano (the module before the JetPack 6.1
# "Super" clocks), 102 for orin-nx and 205 for agx-orin.
MODULES: tuple[Module, ...] = (
    Module(
        "Orin Nano 8GB (Super, JetPack 6.1+)",
        102.0,
        8,
        ("fp16", "int8", "int4"),
        "https://www.brojogopalsapui.com/ai-foundations/sub_contents/AI_hardware/jetson_orin_nano_light.html"
        " (from NVIDIA's Orin Nano Super data sheet: 68 -> 102 GB/s)",
    ),
    Module(
        "Orin Nano 8GB (original clocks)",
        68.0,
        8,
        ("fp16", "int8", "int4"),
        "https://github.com/hokwangchoi/jetson-orin-nano-benchmarks (68 GB/s LPDDR5)",
    ),
    Module(
        "Orin NX 16GB",
        102.4,
        16,
        ("fp16", "int8", "int4"),
        "https://github.com/icub-tech-iit/cad-libraries/files/13056089/JETSON-ORIN-NX-DATASHEET.pdf"
        " (NVIDIA data sheet; the figure was not in the excerpt read here)",
    ),
    Module(
        "AGX Orin 64GB",
        204.8,
        64,
        ("fp16", "int8", "int4"),
        "NVIDIA Jetson AGX Orin Series data sheet (256-bit LPDDR5; 205 in configs/export/targets.yaml;"
        " not re-checked against the sheet)",
    ),
    Module(
        "AGX Thor (T5000)",
        273.0,
        128,
        ("fp16", "fp8", "int4"),
        "https://developer.ridgerun.com/wiki/index.php/NVIDIA_Jetson_AGX_Thor/Introduction/SoM_Overview"
        " (128 GB LPDDR5x 256-bit, 273 GB/s)",
    ),
)

# Published decode speeds of comparable models (batch 1), with where they were read.
PUBLISHED: tuple[dict[str, Any], ...] = (
    {
        "module": "Orin Nano 8GB (original clocks)",
        "model": "Llama 3.2 3B",
        "runtime": "MLC (NanoLLM / jetson-ai-lab), INT4",
        "tok_s": 27.7,
        "url": "https://developer.nvidia.com/blog/nvidia-jetson-orin-nano-developer-kit-gets-a-super-boost/"
        " (as tabulated in github.com/msmcs-robotics/WayfindR-driver"
        " docs/jetson_orin_nano_llm_benchmarks.md)",
    },
    {
        "module": "Orin Nano 8GB (Super, JetPack 6.1+)",
        "model": "Llama 3.2 3B",
        "runtime": "MLC (NanoLLM / jetson-ai-lab), INT4",
        "tok_s": 43.07,
        "url": "same source",
    },
    {
        "module": "Orin Nano 8GB (Super, JetPack 6.1+)",
        "model": "Qwen2.5 7B",
        "runtime": "MLC (NanoLLM / jetson-ai-lab), INT4",
        "tok_s": 21.75,
        "url": "same source",
    },
    {
        "module": "AGX Thor (T5000)",
        "model": "Qwen3-4B-Instruct-2507",
        "runtime": "TensorRT Edge-LLM 0.4.0, INT4 AWQ",
        "tok_s": 76.4,
        "url": "https://nvidia.github.io/TensorRT-Edge-LLM/user_guide/performance/performance-benchmarks.html",
    },
    {
        "module": "AGX Thor (T5000)",
        "model": "Qwen3-1.7B",
        "runtime": "TensorRT Edge-LLM 0.7.0, NVFP4",
        "tok_s": 170.4,
        "url": "https://nvidia.github.io/TensorRT-Edge-LLM/latest/user_guide/performance/performance-benchmarks.html",
    },
)


@dataclass(frozen=True)
class Workload:
    """One question on top of K cached keyframes: prompt sizes as :mod:`egovlm.export.fit` bounds them."""

    keyframes: int = 32
    tokens_per_keyframe: int = 192  # 448x336 keyframes
    question_tokens: int = 64
    answer_tokens: int = 64

    @property
    def prefix_tokens(self) -> int:
        return SYSTEM_TOKENS + self.keyframes * (self.tokens_per_keyframe + LABEL_TOKENS)


def decode_bytes_per_token(dims: ModelDims, precision: str, context: int) -> float:
    """TensorRT decoder weights as held on the device (tied head included) + the fp16 KV read."""
    w = weight_bytes(dims.tensors(), "tensorrt", precision)
    return w.graphs["decoder"].device + dims.kv_bytes_per_token("fp16") * context


def question_bytes(dims: ModelDims, precision: str, work: Workload) -> float:
    """Bytes one question reads at least: each prefill chunk reads the weights and the KV before it;
    each of the answer's later tokens is a decode step over the context so far."""
    weights = weight_bytes(dims.tensors(), "tensorrt", precision).graphs["decoder"].device
    kv = dims.kv_bytes_per_token("fp16")
    chunks = math.ceil(work.question_tokens / TENSORRT_MAX_CHUNK)
    total = sum(weights + kv * (work.prefix_tokens + c * TENSORRT_MAX_CHUNK) for c in range(chunks))
    context = work.prefix_tokens + work.question_tokens
    for i in range(work.answer_tokens - 1):
        total += decode_bytes_per_token(dims, precision, context + i)
    return float(total)


def projection_rows(
    dims: ModelDims | None = None, work: Workload | None = None, modules: Sequence[Module] = MODULES
) -> list[dict[str, Any]]:
    """One row per module and precision: bytes per decoded token (at the end of the prompt) and per
    question, and the bandwidth floor of each."""
    dims = dims or KNOWN_MODELS["qwen2.5-vl-3b"]
    work = work or Workload()
    context = work.prefix_tokens + work.question_tokens
    rows = []
    for m in modules:
        for p in m.precisions:
            weights = weight_bytes(dims.tensors(), "tensorrt", p)
            per_token = decode_bytes_per_token(dims, p, context)
            per_question = question_bytes(dims, p, work)
            rows.append(
                {
                    "module": m.name,
                    "bandwidth_gbs": m.bandwidth_gbs,
                    "precision": p,
                    "weights_gb": round(weights.device / 1e9, 2),
                    "fits_memory": weights.device / 1e9 < m.memory_gb,
                    "bytes_per_token_mb": round(per_token / 1e6, 1),
                    "max_tok_s": round(m.bandwidth_gbs * 1e9 / per_token, 1),
                    "bytes_per_question_gb": round(per_question / 1e9, 1),
                    "min_question_s": round(per_question / (m.bandwidth_gbs * 1e9), 2),
                }
            )
    return rows


def published_rows() -> list[dict[str, Any]]:
    """The published figures with the bytes per token they imply at the module's bandwidth."""
    bw = {m.name: m.bandwidth_gbs for m in MODULES}
    return [
        {
            **{k: v for k, v in p.items() if k != "url"},
            "implied_gb_per_token": round(bw[p["module"]] / p["tok_s"], 2),
            "source": p["url"],
        }
        for p in PUBLISHED
    ]


def _graph_check(out: Path) -> list[str]:
    """Notes comparing the accounting with the graphs the roofline part exported and measured (its
    ``roofline.json`` in the same folder), when it ran."""
    path = out / "roofline.json"
    if not path.is_file():
        return ["no roofline.json in this folder: the accounting was not checked against exported graphs"]
    rows = json.loads(path.read_text()).get("rows", [])
    notes = []
    for r in rows:
        if r.get("fit_predicted_mb"):
            ratio = r["decode_weights_mb"] / r["fit_predicted_mb"]
            notes.append(
                f"{r['impl']}: decoder graph as exported {r['decode_weights_mb']} MB vs the accounting's "
                f"{r['fit_predicted_mb']} MB at the slice's depth (x{ratio:.3f})"
            )
    return notes


def run(out: Path, work: Workload | None = None) -> Report:
    """Write ``out/projection.{json,md,png}``: arithmetic only (seconds); no device was measured."""
    work = work or Workload()
    report = Report(
        "projection",
        params={
            "model": "qwen2.5-vl-3b (KNOWN_MODELS dims)",
            "runtime": "tensorrt (weights as the engines hold them), fp16 KV cache",
            "workload": {**work.__dict__, "prefix_tokens": work.prefix_tokens},
            "modules": [m.__dict__ for m in MODULES],
        },
    )
    report.rows = projection_rows(work=work)
    report.summary = published_rows()
    report.notes += [
        "PROJECTION until a device measures it: bandwidth floors (bytes / published peak bandwidth), not"
        " timings. Real decoders reach a fraction of the floor (compare implied_gb_per_token of the"
        " published rows with bytes_per_token_mb).",
        f"bytes_per_token_mb: one decode step at the end of the prompt ({work.prefix_tokens} prefix +"
        f" {work.question_tokens} question tokens of KV); bytes_per_question_gb: the question's prefill"
        f" chunks ({TENSORRT_MAX_CHUNK} tokens each) + {work.answer_tokens - 1} decode steps.",
        "Summary table: published batch-1 decode speeds of comparable models (not Qwen2.5-VL-3B: no"
        " published Jetson figure for it was found), with the GB per token they imply at the module's"
        " bandwidth.",
        *_graph_check(out),
    ]
    report.write(out)
    from egovlm.benchmarks.plots import write_plots

    write_plots(report, out)
    return report
