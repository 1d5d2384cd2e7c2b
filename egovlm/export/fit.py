"""Does a Qwen2.5-VL fit a device? Bytes as exported at the target precision, the KV cache the runtime
holds at once at most (:func:`kv_live_tokens`), activations at the TensorRT profiles' largest shapes
(prefill in chunks of :data:`TENSORRT_MAX_CHUNK` tokens, so those are a chunk's), the vision features
cache and a runtime reserve, all from tensor SHAPES: a checkpoint's safetensors headers, or the
parameter list its config.json implies. Nothing here loads weights or imports torch, so the export
refuses an oversized job before ``load_model`` and the torch-free edge runtime checks a device profile
with the same numbers (one accounting: :func:`memory_plan`; docs/architecture.md#the-memory-plan).

Weights, per graph, as exported (``egovlm.export.pipeline``, ``egovlm.export.quantize``):

============  ==============================================  =============================================
runtime       vision, embed, other decoder tensors             decoder layers' Linear weights
============  ==============================================  =============================================
tensorrt      fp16                                             fp16; int8 SmoothQuant (ONNX: fp16 + Q/DQ,
                                                               engine: int8 + per-channel scales); int4 AWQ
                                                               (packed + fp16 scale per 128-block + fp16
                                                               pre-quant scale); fp8 (+ per-tensor scale)
onnxruntime   fp32                                             fp32; int8 per channel (+ fp32 scale, int8
                                                               zero point); int4 MatMulNBits (block 32,
                                                               fp32 scales, symmetric: no zero points)
torch         the profile's precision                          the profile's precision
============  ==============================================  =============================================

The LM head: ModelOpt leaves ``lm_head`` unquantised (fp16 on TensorRT); ONNX Runtime's quantisers treat
it like any MatMul with constant weights. A TIED head (no ``lm_head.weight`` in the checkpoint) is
exported TWICE, once in the embed graph and once in the decoder; torch shares one tensor.

Extrapolation: the accounting groups bytes into fixed tensors and per-layer tensors (decoder layers,
vision blocks), so a slice of a model (the real widths, a few layers: ``egovlm model slice3b``) gives
the real model's bytes as fixed + per-layer x the real layer count (:func:`weight_bytes` ``layers=``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from egovlm.contract import MAX_QUESTION_TOKENS
from egovlm.export.targets import ExportConfigError
from egovlm.models.files import ModelLoadError, read_safetensors_headers

GiB = 1024**3
MiB = 1024**2
GRAPHS = ("vision", "embed", "decoder")
RUNTIMES = ("torch", "onnxruntime", "tensorrt")
BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
MODELOPT_INT4_BLOCK = 128  # INT4_AWQ_CFG: block_sizes {-1: 128} (modelopt_recipes numerics/int4_per_block)
ORT_INT4_BLOCK = 32  # egovlm.export.quantize.ORT_INT4_BLOCK (kept equal by a test)
RUNTIME_RESERVE = 512 * MiB  # CUDA context, TensorRT runtime, cuBLAS/cuDNN handles, fragmentation
PROFILE_ALIGN = 64  # context limits are rounded UP to a multiple of this
# Prompt tokens around the frames (upper bounds of Qwen2.5-VL's tokenizer on the contract's prompt):
SYSTEM_TOKENS = 80  # system prompt + chat scaffolding up to the first frame (the real tokenizer: ~60)
LABEL_TOKENS = 16  # per frame: "Frame 12 (t=123.4 s): " + <|vision_start|> + <|vision_end|> + "\n"


class FitError(ExportConfigError):
    """A checkpoint or configuration the accounting cannot read; the message names the file."""


# -- shapes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorShape:
    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_tensors(model_dir: str | Path) -> list[TensorShape]:
    """Names and shapes of every tensor of a checkpoint (``model.safetensors`` or the shards its
    ``model.safetensors.index.json`` names), from the safetensors headers only: no weight is read."""
    try:
        return [TensorShape(t.name, t.shape) for t in read_safetensors_headers(model_dir)]
    except ModelLoadError as e:
        raise FitError(f"cannot size the model from its weights: {e}") from e


def read_config(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FitError(f"{path}: missing; the fit check reads the model's sizes from it")
    return dict(json.loads(path.read_text()))


def _linear_params(name: str, n_out: int, n_in: int, bias: bool = True) -> list[TensorShape]:
    """A linear layer's parameters as a checkpoint names them: ``name.weight`` (out, in) and, with
    ``bias``, ``name.bias`` (out,)."""
    weight = TensorShape(f"{name}.weight", (n_out, n_in))
    return [weight, TensorShape(f"{name}.bias", (n_out,))] if bias else [weight]


@dataclass(frozen=True)
class ModelDims:
    """The sizes of a Qwen2.5-VL that memory depends on (from config.json)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    patch: int = 14
    merge: int = 2
    temporal_patch: int = 2
    vision_heads: int = 16
    out_hidden: int = 0  # the merger's output width (0: the decoder's hidden size)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def from_config(cls, config: Any) -> ModelDims:
        """From a transformers Qwen2.5-VL config object, or a config.json mapping."""

        def get(obj: Any, key: str, default: Any = None) -> Any:
            value = obj.get(key, default) if isinstance(obj, Mapping) else getattr(obj, key, default)
            if value is None:
                raise FitError(f"model config has no {key!r}: not a Qwen2.5-VL config?")
            return value

        text, vision = get(config, "text_config"), get(config, "vision_config")
        tied = get(config, "tie_word_embeddings", get(text, "tie_word_embeddings", False))
        hidden = int(get(text, "hidden_size"))
        return cls(
            layers=int(get(text, "num_hidden_layers")),
            hidden=hidden,
            heads=int(get(text, "num_attention_heads")),
            kv_heads=int(get(text, "num_key_value_heads")),
            intermediate=int(get(text, "intermediate_size")),
            vocab=int(get(text, "vocab_size")),
            tied=bool(tied),
            vision_depth=int(get(vision, "depth")),
            vision_hidden=int(get(vision, "hidden_size")),
            vision_intermediate=int(get(vision, "intermediate_size")),
            patch=int(get(vision, "patch_size", 14)),
            merge=int(get(vision, "spatial_merge_size", 2)),
            temporal_patch=int(get(vision, "temporal_patch_size", 2)),
            vision_heads=int(get(vision, "num_heads", 16)),
            out_hidden=int(get(vision, "out_hidden_size", hidden)),
        )

    @classmethod
    def from_model_dir(cls, path: str | Path) -> ModelDims:
        return cls.from_config(read_config(path))

    def tensors(self) -> list[TensorShape]:
        """The parameter list (names as transformers saves Qwen2.5-VL checkpoints) these sizes imply:
        for checking a device profile without the weights. Tests hold it equal to real headers."""
        h, kv, inter = self.hidden, self.kv_heads * self.head_dim, self.intermediate
        out = [TensorShape("model.embed_tokens.weight", (self.vocab, h))]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            out += [
                TensorShape(p + "input_layernorm.weight", (h,)),
                TensorShape(p + "post_attention_layernorm.weight", (h,)),
                *_linear_params(p + "self_attn.q_proj", h, h),
                *_linear_params(p + "self_attn.k_proj", kv, h),
                *_linear_params(p + "self_attn.v_proj", kv, h),
                *_linear_params(p + "self_attn.o_proj", h, h, bias=False),
                *_linear_params(p + "mlp.gate_proj", inter, h, bias=False),
                *_linear_params(p + "mlp.up_proj", inter, h, bias=False),
                *_linear_params(p + "mlp.down_proj", h, inter, bias=False),
            ]
        out.append(TensorShape("model.norm.weight", (h,)))
        if not self.tied:
            out.append(TensorShape("lm_head.weight", (self.vocab, h)))
        vh, vi, m = self.vision_hidden, self.vision_intermediate, self.vision_hidden * self.merge**2
        out.append(
            TensorShape(
                "visual.patch_embed.proj.weight", (vh, 3, self.temporal_patch, self.patch, self.patch)
            )
        )
        for i in range(self.vision_depth):
            p = f"visual.blocks.{i}."
            out += [
                TensorShape(p + "norm1.weight", (vh,)),
                TensorShape(p + "norm2.weight", (vh,)),
                *_linear_params(p + "attn.qkv", 3 * vh, vh),
                *_linear_params(p + "attn.proj", vh, vh),
                *_linear_params(p + "mlp.gate_proj", vi, vh),
                *_linear_params(p + "mlp.up_proj", vi, vh),
                *_linear_params(p + "mlp.down_proj", vh, vi),
            ]
        out += [
            TensorShape("visual.merger.ln_q.weight", (vh,)),
            *_linear_params("visual.merger.mlp.0", m, m),
            *_linear_params("visual.merger.mlp.2", self.out_hidden or self.hidden, m),
        ]
        return out

    def text_params(self) -> int:
        """Decoder parameters, embeddings included (a tied head counted once)."""
        return sum(t.numel for t in self.tensors() if _role(t.name) != "vision")

    def vision_params(self) -> int:
        return sum(t.numel for t in self.tensors() if _role(t.name) == "vision")

    def kv_bytes_per_token(self, precision: str) -> float:
        """K and V of every layer for one token: 2 x layers x kv_heads x head_dim x bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * BYTES[precision]

    def grid(self, size: tuple[int, int]) -> tuple[int, int, int]:
        """(t, h, w) patch grid of one keyframe of ``size`` = (width, height)."""
        return 1, size[1] // self.patch, size[0] // self.patch

    def tokens_per_keyframe(self, size: tuple[int, int]) -> int:
        _, h, w = self.grid(size)
        return (h * w) // (self.merge**2)


# Published configs, so device profiles can be checked without the weights (config.json of
# Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct).
KNOWN_MODELS: dict[str, ModelDims] = {
    "qwen2.5-vl-3b": ModelDims(36, 2048, 16, 2, 11008, 151936, True, 32, 1280, 3420, out_hidden=2048),
    "qwen2.5-vl-7b": ModelDims(28, 3584, 28, 4, 18944, 152064, False, 32, 1280, 3420, out_hidden=3584),
}


# -- weights as exported ----------------------------------------------------------------------------

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def _role(name: str) -> str:
    if name.startswith(("visual.", "model.visual.")):
        return "vision"
    if name.startswith("lm_head.") or ".lm_head." in name:
        return "lm_head"
    if name.endswith("embed_tokens.weight"):
        return "embed"
    return "decoder"


@dataclass(frozen=True)
class GraphBytes:
    """One graph's weights: as its files hold them (``file``) and as the runtime holds them
    (``device``; differs only where TensorRT folds Q/DQ weights to int8 at build time)."""

    file: int
    device: int


@dataclass(frozen=True)
class WeightBytes:
    runtime: str
    precision: str
    graphs: dict[str, GraphBytes]
    tied: bool

    @property
    def file(self) -> int:
        return sum(g.file for g in self.graphs.values())

    @property
    def device(self) -> int:
        return sum(g.device for g in self.graphs.values())


def _linear(out_f: int, in_f: int, runtime: str, precision: str) -> tuple[float, float]:
    """(file, device) bytes of one quantisable Linear weight [out, in] at ``precision``."""
    n = out_f * in_f
    if runtime == "tensorrt":
        if precision == "int4":  # packed nibbles + fp16 scale per 128-block of in + fp16 AWQ pre-quant scale
            b = n / 2 + out_f * math.ceil(in_f / MODELOPT_INT4_BLOCK) * 2 + in_f * 2
            return b, b
        if precision == "int8":  # ModelOpt writes fp16 weights + Q/DQ; TensorRT folds them to int8
            scales = out_f * 2 + in_f * 2  # per-channel weight scale + SmoothQuant per-input scale
            return 2 * n + scales, n + scales
        if precision == "fp8":
            return n + 8, n + 8  # fp8 weights + per-tensor weight and input scales
        return 2 * n, 2 * n
    if runtime == "onnxruntime":
        if precision == "int8":
            b = n + out_f * 5  # int8 + fp32 scale + int8 zero point per output channel
            return b, b
        if precision == "int4":
            b = out_f * math.ceil(in_f / ORT_INT4_BLOCK) * (ORT_INT4_BLOCK / 2 + 4)
            return b, b
        return 4 * n, 4 * n
    b = n * BYTES[precision]
    return b, b


def _float_bytes(runtime: str, precision: str) -> float:
    """Bytes per element of everything that is not a quantised Linear weight."""
    if runtime == "tensorrt":
        return 2.0
    if runtime == "onnxruntime":
        return 4.0
    return BYTES[precision] if precision in ("fp32", "fp16", "bf16") else 2.0


def _check_precision(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise FitError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if precision not in BYTES:
        raise FitError(f"unknown precision {precision!r}; known: {', '.join(BYTES)}")


def weight_bytes(
    tensors: Sequence[TensorShape],
    runtime: str,
    precision: str,
    *,
    layers: int | None = None,
    vision_depth: int | None = None,
) -> WeightBytes:
    """Bytes of every graph's weights as exported for ``runtime`` at ``precision``.

    ``layers`` / ``vision_depth``: the real model's counts when ``tensors`` come from a slice with
    fewer decoder layers / vision blocks: each graph's per-layer bytes (the mean over the layers
    present) are scaled to the real count, the rest is taken as is."""
    _check_precision(runtime, precision)
    tied = not any(_role(t.name) == "lm_head" for t in tensors)
    fl = _float_bytes(runtime, precision)
    fixed = {g: [0.0, 0.0] for g in GRAPHS}
    per_layer = {g: [0.0, 0.0] for g in GRAPHS}
    seen: dict[str, set[int]] = {"decoder": set(), "vision": set()}

    def add(graph: str, t: TensorShape, fb: float, db: float) -> None:
        pattern = _BLOCK if graph == "vision" else _LAYER
        m = pattern.search(t.name)
        target = fixed
        if m is not None:
            seen[graph].add(int(m.group(1)))
            target = per_layer
        target[graph][0] += fb
        target[graph][1] += db

    for t in tensors:
        role = _role(t.name)
        if role == "vision":
            add("vision", t, t.numel * fl, t.numel * fl)
        elif role == "embed":
            add("embed", t, t.numel * fl, t.numel * fl)
            if tied and runtime != "torch":  # the decoder's LM head is a second copy
                add("decoder", t, *_head(t, runtime, precision))
        elif role == "lm_head":
            add("decoder", t, *_head(t, runtime, precision))
        elif len(t.shape) == 2 and _LAYER.search(t.name) and t.name.endswith(".weight"):
            add("decoder", t, *_linear(t.shape[0], t.shape[1], runtime, precision))
        else:
            add("decoder", t, t.numel * fl, t.numel * fl)
    real = {"decoder": layers, "vision": vision_depth}
    graphs = {}
    for g in GRAPHS:
        scale = 1.0
        count = real.get(g)
        if count is not None and seen.get(g):
            scale = count / len(seen[g])
        graphs[g] = GraphBytes(
            int(fixed[g][0] + per_layer[g][0] * scale), int(fixed[g][1] + per_layer[g][1] * scale)
        )
    return WeightBytes(runtime, precision, graphs, tied)


def _head(t: TensorShape, runtime: str, precision: str) -> tuple[float, float]:
    """The LM head [vocab, hidden]: unquantised on TensorRT (ModelOpt disables ``*lm_head*``),
    quantised like any constant-weight MatMul by ONNX Runtime's quantisers."""
    if runtime == "tensorrt":
        return t.numel * 2.0, t.numel * 2.0
    return _linear(t.shape[0], t.shape[1], runtime, precision)


# -- the workload and the decoder calls the runtime issues -----------------------------------------

# The longest decoder call of a TensorRT runtime (chunked prefill, as TensorRT-LLM's chunked context:
# activation memory follows the chunk, not the prompt). 256 = the longest question
# (egovlm.contract.MAX_QUESTION_TOKENS, so a question after the cached prefix is one call, the
# time-to-first-token path) >= one keyframe with its label (192 + 16 = 208, so a one-frame rebuild is
# one call), and a power of two (the GEMMs' M dimension tiles evenly). At M = 256 a W4A16 GEMM does
# 2 x 256 / 0.5 = 1,024 FLOP per weight byte, above Orin's ridge (~20 TFLOPS fp16 / 68-205 GB/s =
# 100-300 FLOP/byte), so re-reading the weights once per chunk costs little.
TENSORRT_MAX_CHUNK = 256
# egovlm.edge.engine.EngineParams.rebuild_chunk_frames (kept equal by a test): a background rebuild
# calls build_prefix for the first 8 keyframes, then 16, ... (each continuing from the last).
ENGINE_REBUILD_FRAMES = 8


def chunk_sizes(tokens: int, max_chunk: int | None) -> list[int]:
    """How :meth:`egovlm.export.ort_runner.VLMRunner.extend` splits ``tokens`` new tokens into decoder
    calls: consecutive chunks of ``max_chunk`` (None: one call), the last one the remainder."""
    if tokens <= 0:
        return []
    if max_chunk is None or max_chunk >= tokens:
        return [tokens]
    if max_chunk < 1:
        raise FitError(f"max_chunk must be at least 1 token, got {max_chunk}")
    full, rest = divmod(tokens, max_chunk)
    return [max_chunk] * full + ([rest] if rest else [])


@dataclass(frozen=True)
class Workload:
    """What the edge runtime asks of the decoder (docs/architecture.md#engine-and-backends): a prefix of
    [system + K keyframes], questions of at most ``question_tokens``, answers of at most ``new_tokens``,
    every prefill in decoder calls of at most ``max_chunk`` tokens (None: a prefill is one call, as the
    torch backend and ONNX Runtime exports without a TensorRT plan run it)."""

    keyframes: int = 8
    tokens_per_keyframe: int = 192
    question_tokens: int = MAX_QUESTION_TOKENS
    new_tokens: int = 256
    system_tokens: int = SYSTEM_TOKENS
    label_tokens: int = LABEL_TOKENS
    max_chunk: int | None = None
    rebuild_frames: int = ENGINE_REBUILD_FRAMES

    @property
    def frame_tokens(self) -> int:
        return self.tokens_per_keyframe + self.label_tokens

    def prefix_tokens(self, keyframes: int | None = None) -> int:
        k = self.keyframes if keyframes is None else keyframes
        return self.system_tokens + k * self.frame_tokens

    @property
    def context(self) -> int:
        """Tokens of the longest conversation: full prefix + longest question + longest answer."""
        return self.prefix_tokens() + self.question_tokens + self.new_tokens

    @property
    def longest_call(self) -> int:
        """New tokens of the longest decoder call: a chunk, or a whole prompt answered from scratch."""
        longest_prompt = self.prefix_tokens() + self.question_tokens
        return longest_prompt if self.max_chunk is None else min(self.max_chunk, longest_prompt)


@dataclass(frozen=True)
class Box:
    """One decoder optimisation profile: (min, opt, max) of new tokens and of cached tokens. TensorRT
    profiles are boxes: every input dimension has its own range, and ``attention_mask`` (past + seq)
    must match at min, opt and max, so a box costs memory at its corner (seq max, seq max + past max)."""

    seq: tuple[int, int, int]
    past: tuple[int, int, int]

    def admits(self, seq: int, past: int) -> bool:
        return self.seq[0] <= seq <= self.seq[2] and self.past[0] <= past <= self.past[2]

    @property
    def corner(self) -> tuple[int, int]:
        """(seq, past + seq) at the box's maximum: what TensorRT sizes activations for."""
        return self.seq[2], self.seq[2] + self.past[2]


def decoder_boxes(work: Workload) -> dict[str, Box]:
    """The decoder profiles, in engine order (index 0 ``prefill``, 1 ``decode``), covering every call
    :func:`runtime_calls` lists, with C = :attr:`Workload.longest_call` new tokens at most:

    * ``prefill``: any chunk of any prefill (a prefix build, a rebuild, a question, a question from
      scratch): up to C new tokens after up to the full prefix + longest question - 1 cached; tuned
      (opt) for a chunk after the full prefix: a long question, the attention a question pays most;
    * ``decode``: one token after anything up to the longest conversation.

    With the prefill chunked, one prefill box has a small corner (C x (C + p + q)), so the separate
    question and rebuild boxes an unchunked plan needs (to keep a whole prompt and a long cache out of
    one box) are not needed: fewer profiles, shorter engine builds."""
    p, q, n, c = work.prefix_tokens(), work.question_tokens, work.new_tokens, work.longest_call
    return {
        "prefill": Box((1, c, c), (0, min(p, p + q - c), p + q - 1)),
        "decode": Box((1, 1, 1), (0, p + q, p + q + n - 1)),
    }


@dataclass(frozen=True)
class Extend:
    """One :meth:`VLMRunner.extend` the edge runtime issues: ``new`` tokens appended to a state of
    ``start`` tokens, in :func:`chunk_sizes` decoder calls."""

    what: str
    start: int
    new: int

    def calls(self, max_chunk: int | None) -> list[tuple[str, int, int]]:
        out, done = [], 0
        for size in chunk_sizes(self.new, max_chunk):
            out.append((self.what, size, self.start + done))
            done += size
        return out


def runtime_extends(work: Workload) -> list[Extend]:
    """The prefills the edge runtime issues with a buffer of up to ``work.keyframes`` keyframes
    (egovlm.edge.backends.export_backend + egovlm.edge.engine), at the extremes of every kind: prefix
    builds and full rebuilds, partial rebuilds reusing 1..k-1 leading keyframes (the engine's
    background rebuild continues each ``rebuild_frames`` step from the last: one of these too),
    questions of 1..``question_tokens`` tokens after every prefix, and questions from scratch."""
    q = work.question_tokens
    out: list[Extend] = []
    for k in range(1, work.keyframes + 1):
        p = work.prefix_tokens(k)
        out.append(Extend(f"prefix of {k} keyframes", 0, p))
        for shared in range(1, k):
            past = work.prefix_tokens(shared)
            out.append(Extend(f"rebuild of {k} keyframes reusing {shared}", past, p - past))
        out += [Extend(f"question of {s} tokens after {k} keyframes", p, s) for s in (1, q)]
        out += [Extend(f"question from scratch with {k} keyframes", 0, p + s) for s in (1, q)]
    return out


def runtime_calls(work: Workload) -> list[tuple[str, int, int]]:
    """(what, seq, past) of every decoder call the edge runtime issues (:func:`runtime_extends`, each
    in its chunks, and the decode steps of the longest answer after every prefix)."""
    q, n = work.question_tokens, work.new_tokens
    calls = [c for e in runtime_extends(work) for c in e.calls(work.max_chunk)]
    for k in range(1, work.keyframes + 1):
        p = work.prefix_tokens(k)
        calls += [(f"answer token after {k} keyframes", 1, p + s) for s in (1, q + n - 1)]
    return calls


# -- activations --------------------------------------------------------------------------------------


def decoder_activation_bytes(dims: ModelDims, seq: int, total: int, dtype_bytes: float) -> int:
    """An upper bound of one decoder call's live activations at ``seq`` new tokens attending to
    ``total`` (= past + seq) tokens, attention NOT fused: the scores in the graph dtype and their
    fp32 softmax (transformers' eager attention, exported as is), K/V repeated to every head (GQA),
    the MLP's three widest tensors, the residual stream with fp32 RMSNorm islands, fp32 logits of
    the last position. TensorRT reuses activation memory across layers, so it is one layer's worth."""
    attention = dims.heads * seq * total * (dtype_bytes + 4)
    repeated_kv = 2 * total * dims.heads * dims.head_dim * dtype_bytes
    mlp = 3 * seq * dims.intermediate * dtype_bytes
    hidden = seq * dims.hidden * (6 * dtype_bytes + 2 * 4)
    return int(attention + repeated_kv + mlp + hidden + 4 * dims.vocab)


def decoder_activation(dims: ModelDims, work: Workload, runtime: str, dtype_bytes: float) -> int:
    """The decoder's activations for ``work``: TensorRT sizes an execution context for its profiles'
    largest shapes (every box's corner, :func:`decoder_boxes`); the dynamic-shape runtimes (torch,
    ONNX Runtime) for the largest call: :attr:`Workload.longest_call` new tokens ending the longest
    prompt, or the longest conversation's last decode step."""
    if runtime == "tensorrt":
        corners = [box.corner for box in decoder_boxes(work).values()]
    else:
        longest_prompt = work.prefix_tokens() + work.question_tokens
        corners = [(work.longest_call, longest_prompt), (1, work.context - 1)]
    return max(decoder_activation_bytes(dims, seq, total, dtype_bytes) for seq, total in corners)


def vision_activation_bytes(dims: ModelDims, size: tuple[int, int], dtype_bytes: float) -> int:
    """One keyframe through the vision tower (the full-attention blocks are the widest), the same
    bound as the decoder's: unfused attention scores + fp32 softmax, the MLP, the residual stream."""
    t, h, w = dims.grid(size)
    n = t * h * w
    vh = dims.vision_hidden
    attention = dims.vision_heads * n * n * (dtype_bytes + 4)
    mlp = 3 * n * dims.vision_intermediate * dtype_bytes
    hidden = n * vh * (6 * dtype_bytes + 2 * 4)
    pixels = n * 3 * dims.temporal_patch * dims.patch**2 * 4
    return int(attention + mlp + hidden + pixels)


def extend_held(start: int, new: int, max_chunk: int | None, copy: int = 0) -> int:
    """Most KV tokens :meth:`VLMRunner.extend` holds at once, beyond its caller's ``start``-token state,
    appending ``new`` tokens: during each decoder call, its input and its output (states are never
    written in place; each call returns new ``present_*`` buffers). The first call's input is the
    caller's state, plus a ``copy`` of its leading positions when it is a cut of a longer state
    (egovlm.edge.backends.export_backend reuses the leading keyframes that way); every later input is
    the previous call's output, freed after the next call. The last call holds the most of those."""
    sizes = chunk_sizes(new, max_chunk)
    if not sizes:
        return copy  # nothing appended: the cut is the new state, one dense copy
    first = copy + start + sizes[0]
    if len(sizes) == 1:
        return first
    end = start + new
    return max(first, (end - sizes[-1]) + end)


def kv_live_tokens(work: Workload) -> int:
    """KV tokens the edge runtime holds at once at most with a full buffer (every term grows with the
    frames held), as egovlm.edge.engine and egovlm.edge.backends.export_backend hold them:

    * the warm prefix ``W`` (p tokens), which every question and every rebuild starts from;
    * a question (:func:`question_held`) running concurrently with one ``build_prefix`` call of a
      background rebuild (:func:`rebuild_held`): the worker steps aside between those calls while a
      question waits or runs, so at most one overlaps it;
    * or a rebuild on the asking thread (no worker: scripts, tests) in one ``build_prefix`` call."""
    background = rebuild_held(work, work.rebuild_frames)
    direct = rebuild_held(work, work.keyframes)
    return work.prefix_tokens() + max(question_held(work) + background, direct)


def question_held(work: Workload) -> int:
    """KV tokens a question holds beyond the warm prefix: its prefill (:func:`extend_held`; from
    scratch the start is empty), then each decode step's input and output state (the longest answer's
    last step: the state after p + q + n - 2 tokens and the one after p + q + n - 1)."""
    p, q, n, c = work.prefix_tokens(), work.question_tokens, work.new_tokens, work.max_chunk
    prefill = max(extend_held(p, q, c), extend_held(0, p + q, c))
    decode = 2 * (p + q + n) - 3 if n >= 2 else 0
    return max(prefill, decode)


def rebuild_held(work: Workload, step: int) -> int:
    """KV tokens one ``build_prefix`` call of a rebuild holds beyond the warm prefix W (full: K frames),
    when the engine builds a K-frame snapshot ``step`` keyframes at a time. The first call builds the
    first ``step`` keyframes from W, reusing the 0..K-1 leading keyframes W shares (a cut of W: copied
    for the first decoder call only); each later call continues from the previous call's state, which
    the engine holds besides W."""
    k = work.keyframes
    ends = [*range(step, k, step), k]
    first, c = ends[0], work.max_chunk
    best = 0
    for shared in range(k):  # shared == k: the same snapshot, no rebuild
        kept = min(shared, first)
        reused = work.prefix_tokens(kept) if kept else 0
        copy = reused if 0 < reused < work.prefix_tokens() else 0
        best = max(best, extend_held(reused, work.prefix_tokens(first) - reused, c, copy))
    for before, end in itertools.pairwise(ends):
        previous = work.prefix_tokens(before)  # held by the engine and the start of this call
        best = max(best, previous + extend_held(previous, work.prefix_tokens(end) - previous, c))
    return best


# -- the plan -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """What the model may use on a device: ``total`` bytes, of which ``reserve`` go to the runtime
    (CUDA context, TensorRT, Python, allocator slack) and ``where`` names the config it comes from."""

    total: int
    reserve: int
    where: str


@dataclass(frozen=True)
class MemoryPlan:
    workload: Workload
    weights: WeightBytes
    kv_bytes_per_token: int
    kv_tokens: int
    max_context: int
    decoder_activation: int
    vision_activation: int
    features: int  # the per-keyframe visual tokens the runtime caches on the host (fp32)
    budget: Budget
    boxes: dict[str, Box] = field(default_factory=dict)

    @property
    def kv_bytes(self) -> int:
        return self.kv_tokens * self.kv_bytes_per_token

    @property
    def total(self) -> int:
        act = self.decoder_activation + self.vision_activation
        return self.weights.device + self.kv_bytes + act + self.features + self.budget.reserve

    @property
    def fits(self) -> bool:
        return self.total <= self.budget.total

    def summary(self) -> str:
        g = self.weights.graphs
        head = "tied LM head exported twice" if self.weights.tied and self.weights.runtime != "torch" else ""
        c = self.workload.max_chunk
        chunks = "" if c is None else f"(prefill in chunks of <= {c} tokens) "
        return (
            f"weights {self.weights.device / GiB:.2f} GiB (vision {g['vision'].device / GiB:.2f}, "
            f"embed {g['embed'].device / GiB:.2f}, decoder {g['decoder'].device / GiB:.2f} at "
            f"{self.weights.precision}{'; ' + head if head else ''}) + KV {self.kv_bytes / GiB:.2f} GiB "
            f"({self.kv_tokens} tokens live, context {self.max_context}) + activations {chunks}"
            f"{(self.decoder_activation + self.vision_activation) / GiB:.2f} GiB (decoder "
            f"{self.decoder_activation / GiB:.2f}, vision {self.vision_activation / GiB:.2f}) + vision "
            f"cache {self.features / GiB:.2f} GiB + runtime reserve {self.budget.reserve / GiB:.2f} GiB "
            f"= {self.total / GiB:.2f} GiB of {self.budget.total / GiB:.2f} GiB ({self.budget.where})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "keyframes": self.workload.keyframes,
            "prefix_tokens": self.workload.prefix_tokens(),
            "question_tokens": self.workload.question_tokens,
            "new_tokens": self.workload.new_tokens,
            "max_chunk": self.workload.max_chunk,
            "max_context": self.max_context,
            "weights_file_bytes": {k: v.file for k, v in self.weights.graphs.items()},
            "weights_device_bytes": {k: v.device for k, v in self.weights.graphs.items()},
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_live_tokens": self.kv_tokens,
            "decoder_activation_bytes": self.decoder_activation,
            "vision_activation_bytes": self.vision_activation,
            "features_bytes": self.features,
            "reserve_bytes": self.budget.reserve,
            "budget_bytes": self.budget.total,
            "total_bytes": self.total,
        }


def memory_plan(
    dims: ModelDims,
    weights: WeightBytes,
    work: Workload,
    size: tuple[int, int],
    budget: Budget,
    kv_precision: str | None = None,
) -> MemoryPlan:
    """Everything the device holds for ``work``: weights as exported, the KV the runtime holds at once
    at most (:func:`kv_live_tokens`), the decoder's activations (:func:`decoder_activation`: at the
    TensorRT profiles' corners, or the largest call) and one keyframe through the vision tower, the
    vision cache and the reserve."""
    act = _float_bytes(weights.runtime, weights.precision)
    kv_dtype = kv_precision or {2.0: "fp16", 4.0: "fp32"}.get(act, "fp16")
    return MemoryPlan(
        workload=work,
        weights=weights,
        kv_bytes_per_token=int(dims.kv_bytes_per_token(kv_dtype)),
        kv_tokens=kv_live_tokens(work),
        max_context=_align(work.context),
        decoder_activation=decoder_activation(dims, work, weights.runtime, act),
        vision_activation=vision_activation_bytes(dims, size, act),
        features=work.keyframes * work.tokens_per_keyframe * (dims.out_hidden or dims.hidden) * 4,
        budget=budget,
        boxes=decoder_boxes(work),
    )


def _align(n: int) -> int:
    return -(-n // PROFILE_ALIGN) * PROFILE_ALIGN


def largest_fitting_keyframes(
    dims: ModelDims,
    weights: WeightBytes,
    work: Workload,
    size: tuple[int, int],
    budget: Budget,
    kv_precision: str | None = None,
    limit: int = 256,
) -> int:
    """The largest K (0: none) whose plan fits, everything else unchanged. Memory grows with K."""
    best = 0
    for k in range(1, limit + 1):
        if not memory_plan(dims, weights, replace(work, keyframes=k), size, budget, kv_precision).fits:
            break
        best = k
    return best


def describe_tensors(tensors: Iterable[TensorShape]) -> str:
    """A short description for messages: how many tensors, decoder layers and vision blocks."""
    names = [t.name for t in tensors]
    layers = {m.group(1) for n in names if _role(n) == "decoder" and (m := _LAYER.search(n))}
    blocks = {m.group(1) for n in names if (m := _BLOCK.search(n))}
    return f"{len(names)} tensors, {len(layers)} decoder layers, {len(blocks)} vision blocks"
