"""Parity of an export against the PyTorch model: per-graph errors, teacher-forced logits, greedy tokens,
optional accuracy on an eval set; thresholds per precision from ``configs/export/parity.yaml``.

Reference = the original checkpoint in fp32 PyTorch: greedy tokens from ``model.generate``, logits and
visual tokens from the same (unquantised) wrapper modules that were exported. Candidate = the exported
graphs run by ONNX Runtime on CPU when it can run them (fp32, fp16, int8 and int4 for ONNX Runtime
targets; fp16 and ModelOpt int8 Q/DQ for TensorRT targets), else the ModelOpt fake-quant PyTorch module
that was exported (TensorRT int4/fp8 graphs use ``trt::`` ops only TensorRT implements). The report says
which, per graph. Engine parity (TensorRT on the device) is not measured here.

Metrics (see parity.yaml for the thresholds and why quantised precisions gate on cosine + teacher-forced
top-1 rather than on exact greedy sequences):
- vision: max-abs and min cosine of the merged visual tokens over all keyframes;
- logits: over every decoder call of the teacher-forced runs (prefill's last position, then each step
  fed the reference token): max-abs, min cosine, top-1 agreement with the reference token;
- greedy_exact: fraction of prompts whose free-running greedy tokens equal ``model.generate``'s;
- accuracy (with an eval set): answer-letter accuracy of reference and candidate, and the delta.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egovlm.config import load
from egovlm.export.ort_runner import GraphBackend, VLMRunner
from egovlm.export.prompts import Prompt
from egovlm.export.targets import ExportConfigError, config_dir

METRIC_DIRECTION = {  # True: higher is better
    "logits_max_abs": False,
    "vision_max_abs": False,
    "logits_cosine": True,
    "logits_cosine_mean": True,
    "vision_cosine": True,
    "top1_agreement": True,
    "greedy_exact": True,
    "accuracy_delta": True,
}


def load_all_thresholds(path: Path | None = None) -> dict[str, dict[str, float]]:
    """Every precision's thresholds in ``path`` (default ``configs/export/parity.yaml``)."""
    path = path or config_dir() / "parity.yaml"
    table = load(path, dict[str, dict[str, float]], error=ExportConfigError)
    for precision, metrics in table.items():
        unknown = sorted(set(metrics) - set(METRIC_DIRECTION))
        if unknown:
            raise ExportConfigError(f"{path}: precision {precision!r} has unknown metrics {unknown}")
    return table


def load_thresholds(precision: str, path: Path | None = None) -> dict[str, float]:
    """The thresholds an export at ``precision`` must meet (see :func:`load_all_thresholds`)."""
    path = path or config_dir() / "parity.yaml"
    table = load_all_thresholds(path)
    if precision not in table:
        raise ExportConfigError(f"{path}: no thresholds for precision {precision!r}")
    return table[precision]


class TorchGraphs:
    """The exported wrapper modules run by PyTorch, behind the runner's :class:`GraphBackend` protocol."""

    def __init__(
        self,
        vision: torch.nn.Module,
        embed: torch.nn.Module,
        decoder: torch.nn.Module,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.vision_module, self.embed_module, self.decoder_module = vision, embed, decoder
        self.dtype = dtype
        self.kv_dtype = np.float16 if dtype == torch.float16 else np.float32
        self.embed_dtype = self.kv_dtype

    @torch.no_grad()
    def vision(self, pixel_values: np.ndarray) -> np.ndarray:
        out = self.vision_module(torch.from_numpy(pixel_values).to(self.dtype))
        return out.float().numpy()

    @torch.no_grad()
    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        return self.embed_module(torch.from_numpy(input_ids)).float().numpy()

    @torch.no_grad()
    def decoder(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        out = self.decoder_module(*decoder_args(feeds, self.dtype))
        return out[0].float().numpy(), [t.numpy() for t in out[1:]]


def decoder_args(feeds: dict[str, np.ndarray], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Runner feeds (by name) -> the DecoderGraph's positional arguments."""
    n_layers = sum(1 for k in feeds if k.startswith("past_key."))
    past = [feeds[f"past_{kind}.{i}"] for i in range(n_layers) for kind in ("key", "value")]
    return (
        torch.from_numpy(np.asarray(feeds["inputs_embeds"])).to(dtype),
        torch.from_numpy(feeds["position_ids"]),
        torch.from_numpy(feeds["attention_mask"]),
        *(torch.from_numpy(np.asarray(p)).to(dtype) for p in past),
    )


class RecordingBackend:
    """Wraps a backend and keeps every decoder feed: ModelOpt calibration replays them."""

    def __init__(self, inner: GraphBackend) -> None:
        self.inner = inner
        self.kv_dtype = inner.kv_dtype
        self.embed_dtype = inner.embed_dtype
        self.feeds: list[dict[str, np.ndarray]] = []

    def vision(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.inner.vision(pixel_values)

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        return self.inner.embed(input_ids)

    def decoder(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        self.feeds.append(dict(feeds))
        return self.inner.decoder(feeds)


def calibration_feeds(
    runner: VLMRunner, prompts: Sequence[Prompt], decode_steps: int = 4
) -> list[dict[str, np.ndarray]]:
    """Decoder inputs seen while prefilling each prompt and decoding a few greedy steps: realistic
    activations (visual tokens, text, KV lengths) for ModelOpt's calibration."""
    recorder = RecordingBackend(runner.backend)
    recording = VLMRunner(recorder, runner.dims, runner.processor)
    for p in prompts:
        recording.generate(p.frames, p.question, p.options, max_new_tokens=decode_steps + 1)
    return recorder.feeds


@dataclass
class Errors:
    max_abs: float = 0.0
    min_cosine: float = 1.0
    cosine_sum: float = 0.0
    rows: int = 0

    @property
    def mean_cosine(self) -> float:
        return self.cosine_sum / self.rows if self.rows else 1.0

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        ref2 = np.asarray(ref, dtype=np.float64).reshape(-1, ref.shape[-1])
        cand2 = np.asarray(cand, dtype=np.float64).reshape(-1, ref.shape[-1])
        self.max_abs = max(self.max_abs, float(np.max(np.abs(ref2 - cand2))))
        norms = np.linalg.norm(ref2, axis=1) * np.linalg.norm(cand2, axis=1)
        cos = np.sum(ref2 * cand2, axis=1) / np.maximum(norms, 1e-30)
        self.min_cosine = min(self.min_cosine, float(np.min(cos)))
        self.cosine_sum += float(np.sum(cos))
        self.rows += cos.size


@dataclass
class PromptResult:
    reference_tokens: list[int]
    candidate_tokens: list[int]
    top1_agree: int
    steps: int
    first_divergence: int | None


@dataclass
class ParityResult:
    vision: Errors = field(default_factory=Errors)
    logits: Errors = field(default_factory=Errors)
    prompts: list[PromptResult] = field(default_factory=list)
    accuracy: dict[str, Any] | None = None
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        steps = sum(p.steps for p in self.prompts)
        agree = sum(p.top1_agree for p in self.prompts)
        exact = sum(p.reference_tokens == p.candidate_tokens for p in self.prompts)
        out = {
            "vision_max_abs": self.vision.max_abs,
            "vision_cosine": self.vision.min_cosine,
            "logits_max_abs": self.logits.max_abs,
            "logits_cosine": self.logits.min_cosine,
            "logits_cosine_mean": self.logits.mean_cosine,
            "top1_agreement": agree / steps if steps else 0.0,
            "greedy_exact": exact / len(self.prompts) if self.prompts else 0.0,
        }
        if self.accuracy is not None:
            out["accuracy_delta"] = float(self.accuracy["delta"])
        return out


def reference_generate(model: Any, processor: Any, prompt: Prompt, max_new_tokens: int) -> list[int]:
    """Greedy tokens of the PyTorch model through the processor, exactly as train/eval run it."""
    from egovlm.contract import build_messages

    messages = build_messages(prompt.frames, prompt.question, prompt.options)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[f.pil() for f in prompt.frames], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return [int(t) for t in out[0, inputs["input_ids"].shape[1] :]]


def measure(
    reference_model: Any,
    reference: VLMRunner,
    candidate: VLMRunner,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 24,
    eval_prompts: Sequence[Prompt] = (),
    eval_max_new_tokens: int = 256,
) -> ParityResult:
    """Compare ``candidate`` with the fp32 PyTorch ``reference`` on ``prompts`` (see module docstring)."""
    start = time.perf_counter()
    result = ParityResult()
    for prompt in prompts:
        ref_visual = [reference.encode_keyframe(f.image) for f in prompt.frames]
        cand_visual = [candidate.encode_keyframe(f.image) for f in prompt.frames]
        for r, c in zip(ref_visual, cand_visual, strict=True):
            result.vision.add(r, c)
        ref_tokens = reference_generate(reference_model, reference.processor, prompt, max_new_tokens)
        from egovlm.contract import build_messages

        ids = reference.prompt_ids(build_messages(prompt.frames, prompt.question, prompt.options))
        # Teacher forcing: both fed the reference tokens, each on its own visual tokens.
        ref_state = reference.extend(reference.empty_state(), ids, ref_visual)
        cand_state = candidate.extend(candidate.empty_state(), ids, cand_visual)
        _, ref_logits, _ = reference.greedy(ref_state, 0, keep_logits=True, forced=ref_tokens)
        _, cand_logits, _ = candidate.greedy(cand_state, 0, keep_logits=True, forced=ref_tokens)
        agree = 0
        for r, c, tok in zip(ref_logits, cand_logits, ref_tokens, strict=True):
            result.logits.add(r[None], c[None])
            agree += int(np.argmax(c)) == tok
        cand_tokens, _, _ = candidate.greedy(cand_state, max_new_tokens)
        diverge = next(
            (i for i, (a, b) in enumerate(zip(ref_tokens, cand_tokens, strict=False)) if a != b), None
        )
        if diverge is None and len(ref_tokens) != len(cand_tokens):
            diverge = min(len(ref_tokens), len(cand_tokens))
        result.prompts.append(PromptResult(ref_tokens, cand_tokens, agree, len(ref_tokens), diverge))
    if eval_prompts:
        result.accuracy = accuracy(reference, candidate, eval_prompts, eval_max_new_tokens)
    result.seconds = time.perf_counter() - start
    return result


def accuracy(
    reference: VLMRunner, candidate: VLMRunner, prompts: Sequence[Prompt], max_new_tokens: int
) -> dict[str, Any]:
    """Answer accuracy of both runners on answered prompts: the option letter (written as the letter
    or the option's text) or, for an open prompt, the words (contract.parse_answer, answers_match)."""
    from egovlm.contract import answers_match, parse_answer

    answered = [p for p in prompts if p.answer]
    if not answered:
        raise ValueError("the eval set has no answered items (field 'answer')")
    hits = {"reference": 0, "candidate": 0}
    for p in answered:
        letters = "".join(p.options) if p.options else None
        for name, runner in (("reference", reference), ("candidate", candidate)):
            text = runner.generate(p.frames, p.question, p.options, max_new_tokens=max_new_tokens).text
            hits[name] += answers_match(parse_answer(text, letters, p.options).answer, p.answer)
    n = len(answered)
    ref_acc, cand_acc = hits["reference"] / n, hits["candidate"] / n
    return {"items": n, "reference": ref_acc, "candidate": cand_acc, "delta": cand_acc - ref_acc}


def failures(metrics: dict[str, float], thresholds: dict[str, float]) -> list[str]:
    """Human-readable list of thresholds the metrics miss (empty: pass)."""
    out = []
    for name, bound in thresholds.items():
        if name not in metrics:
            continue
        value = metrics[name]
        higher_is_better = METRIC_DIRECTION[name]
        ok = value >= bound if higher_is_better else value <= bound
        if not ok:
            op = ">=" if higher_is_better else "<="
            out.append(f"{name} = {value:.6g}, required {op} {bound:.6g}")
    return out


def summary(result: ParityResult, thresholds: dict[str, float], methods: dict[str, str]) -> dict[str, Any]:
    metrics = result.metrics()
    failed = failures(metrics, thresholds)
    return {
        "passed": not failed,
        "failures": failed,
        "metrics": metrics,
        "thresholds": thresholds,
        "methods": methods,
        "accuracy": result.accuracy,
        "prompts": [
            {
                "reference_tokens": p.reference_tokens,
                "candidate_tokens": p.candidate_tokens,
                "top1_agree": p.top1_agree,
                "steps": p.steps,
                "first_divergence": p.first_divergence,
            }
            for p in result.prompts
        ],
        "seconds": round(result.seconds, 3),
    }
