"""The three ONNX graphs the device runs, and how they are exported from a Qwen2.5-VL checkpoint.

Graphs (names and I/O are the contract with ``egovlm.edge``'s onnx/tensorrt backends; the manifest
repeats them per export):

``vision``  pixel_values ``[P, C*T*14*14]`` of ONE keyframe (the image processor's patches, P fixed by
            the keyframe size) -> visual_tokens ``[P/4, hidden]``: the merged tokens that replace the
            keyframe's ``<|image_pad|>`` run in the prompt. Computed once per keyframe and cached.
``embed``   input_ids ``[batch, seq]`` int64 -> inputs_embeds ``[batch, seq, hidden]``.
``decoder`` inputs_embeds ``[batch, seq, hidden]``, position_ids ``[3, batch, seq]`` int64 (M-RoPE
            t/h/w rows, computed on the host by :mod:`egovlm.export.positions`), attention_mask
            ``[batch, past+seq]`` int64 (1 = attend), ``past_key.{i}``/``past_value.{i}``
            ``[batch, kv_heads, past, head_dim]`` per layer -> logits ``[batch, vocab]`` float32 (last
            position only) and ``present_key.{i}``/``present_value.{i}`` ``[batch, kv_heads, past+seq,
            head_dim]``.

ONE decoder graph serves prefill and decode: ``seq`` and ``past`` are both dynamic (``past`` may be 0).
Two graphs would double the weights on disk and in an 8 GB Orin's memory for no gain: ONNX Runtime
handles dynamic shapes natively, and TensorRT gets two optimisation profiles (prefill: long ``seq``;
decode: ``seq = 1``) on the one engine (see :mod:`egovlm.export.tensorrt_build`). Logits are returned for
the last position only: a 2 k-token prefill with Qwen's 151 k vocabulary would otherwise write 1.2 GB.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)`` for all three graphs, because
(1) the vision tower's window attention splits by data-dependent lengths that ``torch.export`` cannot
guard (docs/architecture.md#dependency-facts); tracing at the fixed keyframe grid bakes them in as
constants, which is exactly right for fixed-size keyframes; (2) NVIDIA ModelOpt emits its Q/DQ nodes
through TorchScript symbolic functions, so the TensorRT path needs this exporter anyway; one exporter,
one set of quirks.

Model patching (no transformers source is changed; everything happens in the wrappers below):
- attention is switched to the ``eager`` implementation: plain MatMul/Softmax ops that every ONNX
  runtime and TensorRT understand (SDPA would trace into the same ops with more Casts);
- the vision tower receives its rotary position ids, cu_seqlens and window indices precomputed on the
  host for the fixed grid (transformers' ``vision_utils`` accept them as kwargs), registered as buffers
  so they are constant-folded into the graph;
- the decoder's causal + padding mask is built in the wrapper from ``attention_mask`` and the past
  length with shape-generic ops, and handed to transformers as an already-prepared mask mapping, so
  transformers' mask helpers (which may skip the mask on trace-time conditions) never run;
- the KV cache is a ``DynamicCache`` filled from the flat ``past_*`` inputs inside the trace, and the
  updated tensors are returned as flat ``present_*`` outputs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

VISION, EMBED, DECODER = "vision", "embed", "decoder"
GRAPHS = (VISION, EMBED, DECODER)
OPSET = 19  # QuantizeLinear/DequantizeLinear with fp16 scales and FP8 types need opset 19
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with room to spare
# Highest ONNX IR version written. The device runtimes read what onnx 1.23 here could write (IR 14):
# ONNX Runtime 1.23.2, the newest with CPython 3.10 wheels (JetPack 6), loads IR <= 11 and opsets
# <= 23 (measured); ModelOpt pins its own ONNX output to IR 10 for ORT and TensorRT. The tracer writes
# IR 9, INT4 weights need IR 10: every graph is saved at IR 9 or 10.
MAX_IR_VERSION = 10
INT4_IR_VERSION = 10  # INT4/UINT4 tensor types were added in IR 10


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: ``shape`` holds ints for fixed and names for dynamic dimensions."""

    name: str
    shape: list[int | str]
    dtype: str


@dataclass
class GraphSpec:
    name: str
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    precision: str
    external_data: list[str] = field(default_factory=list)
    export_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelDims:
    """What a runtime needs to know about the model to drive the graphs."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    image_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    spatial_merge_size: int
    eos_token_ids: list[int]
    pad_token_id: int | None
    keyframe_size: tuple[int, int]  # (width, height)
    image_grid_thw: tuple[int, int, int]  # patch grid of one keyframe
    patch_dim: int  # channels * temporal_patch * patch * patch

    @property
    def num_patches(self) -> int:
        t, h, w = self.image_grid_thw
        return t * h * w

    @property
    def tokens_per_keyframe(self) -> int:
        return self.num_patches // (self.spatial_merge_size**2)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["num_patches"] = self.num_patches
        out["tokens_per_keyframe"] = self.tokens_per_keyframe
        return out


def keyframe_pixels(
    processor: Any, keyframe_size: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """pixel_values and grid of one mid-grey keyframe, straight from the model's own image processor."""
    from PIL import Image

    w, h = keyframe_size
    image = Image.fromarray(np.full((h, w, 3), 128, dtype=np.uint8))
    out = processor.image_processor(images=[image], return_tensors="np")
    grid = tuple(int(x) for x in out["image_grid_thw"][0])
    return np.asarray(out["pixel_values"], dtype=np.float32), (grid[0], grid[1], grid[2])


def model_dims(loaded: Any) -> ModelDims:
    cfg = loaded.model.config
    text = cfg.text_config
    pixels, grid = keyframe_pixels(loaded.processor, loaded.keyframe_size)
    eos = loaded.model.generation_config.eos_token_id
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    pad = loaded.model.generation_config.pad_token_id
    return ModelDims(
        hidden_size=int(text.hidden_size),
        num_layers=int(text.num_hidden_layers),
        num_heads=int(text.num_attention_heads),
        num_kv_heads=int(text.num_key_value_heads),
        head_dim=int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads),
        vocab_size=int(text.vocab_size),
        image_token_id=int(cfg.image_token_id),
        vision_start_token_id=int(cfg.vision_start_token_id),
        vision_end_token_id=int(cfg.vision_end_token_id),
        spatial_merge_size=int(cfg.vision_config.spatial_merge_size),
        eos_token_ids=eos_ids,
        pad_token_id=int(pad) if pad is not None else None,
        keyframe_size=(int(loaded.keyframe_size[0]), int(loaded.keyframe_size[1])),
        image_grid_thw=grid,
        patch_dim=int(pixels.shape[1]),
    )


def prepare_for_export(model: Any) -> Any:
    """Eager attention: plain MatMul/Softmax that every runtime understands (see module docstring)."""
    model.set_attn_implementation("eager")
    return model.eval()


class VisionGraph(nn.Module):
    """One keyframe's patches -> its merged visual tokens, with the grid's indices precomputed."""

    def __init__(self, model: Any, grid_thw: tuple[int, int, int]) -> None:
        super().__init__()
        from transformers.vision_utils import (
            get_vision_attention_seqlens,
            get_vision_position_ids,
            get_vision_window_index,
        )

        self.visual = model.model.visual
        cfg = self.visual.config
        grid = torch.tensor([list(grid_thw)], dtype=torch.long)
        self.register_buffer("grid", grid, persistent=False)
        self.register_buffer(
            "rotary_pos", get_vision_position_ids(grid, cfg.spatial_merge_size), persistent=False
        )
        cu_seqlens, _ = get_vision_attention_seqlens(grid, cfg)
        self.register_buffer("cu_seqlens", cu_seqlens, persistent=False)
        window_index, cu_window = get_vision_window_index(
            grid, cfg.spatial_merge_size, cfg.window_size, cfg.patch_size
        )
        self.register_buffer("window_index", window_index, persistent=False)
        self.register_buffer("cu_window_seqlens", cu_window, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.visual(
            pixel_values,
            grid_thw=self.grid,
            position_ids=self.rotary_pos,
            cu_seqlens=self.cu_seqlens,
            window_index=self.window_index,
            cu_window_seqlens=self.cu_window_seqlens,
        )
        return out.pooler_output


class EmbedGraph(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.embed_tokens = model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)


def causal_mask(
    attention_mask: torch.Tensor,
    past_len: int | torch.Tensor,
    seq_len: int | torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Additive mask ``[batch, 1, seq, past+seq]``: query i (absolute position past+i) sees key j iff
    ``j <= past+i`` and ``attention_mask[b, j] == 1``. Shape-generic ops only, so one traced graph
    serves every (past, seq)."""
    device = attention_mask.device
    query_pos = torch.arange(seq_len, device=device) + past_len
    key_pos = torch.arange(attention_mask.shape[1], device=device)
    allowed = (key_pos[None, :] <= query_pos[:, None])[None, None] & attention_mask[:, None, None, :].bool()
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)


class DecoderGraph(nn.Module):
    """Language model + LM head with explicit KV-cache tensors (see the module docstring)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.language_model = model.model.language_model
        self.lm_head = model.lm_head
        self.text_config = model.config.text_config
        self.num_layers = int(self.text_config.num_hidden_layers)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.text_config)
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        mask = causal_mask(attention_mask, past[0].shape[2], inputs_embeds.shape[1], inputs_embeds.dtype)
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            attention_mask={"full_attention": mask},
            past_key_values=cache,
            use_cache=True,
        )
        # Keep a seq axis of 1 so the head stays a MatMul (int8/int4 quantizers target MatMul, not Gemm).
        logits = self.lm_head(out.last_hidden_state[:, -1:, :])[:, 0, :].float()
        # present_* keep the past_* dtype (a quantised projection may otherwise leave them fp32), so a
        # runtime can feed them straight back.
        kv_dtype = past[0].dtype
        presents: list[torch.Tensor] = []
        for layer in cache.layers[: self.num_layers]:
            presents += [layer.keys.to(kv_dtype), layer.values.to(kv_dtype)]
        return (logits, *presents)


def kv_names(num_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}_{kind}.{i}" for i in range(num_layers) for kind in ("key", "value")]


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]


def vision_io(dims: ModelDims, dtype: torch.dtype) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return (
        [TensorSpec("pixel_values", [dims.num_patches, dims.patch_dim], _dtype_name(dtype))],
        [TensorSpec("visual_tokens", [dims.tokens_per_keyframe, dims.hidden_size], _dtype_name(dtype))],
    )


def embed_io(dims: ModelDims, dtype: torch.dtype) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return (
        [TensorSpec("input_ids", ["batch", "seq"], "int64")],
        [TensorSpec("inputs_embeds", ["batch", "seq", dims.hidden_size], _dtype_name(dtype))],
    )


def decoder_io(dims: ModelDims, dtype: torch.dtype) -> tuple[list[TensorSpec], list[TensorSpec]]:
    name = _dtype_name(dtype)
    kv_in = [
        TensorSpec(n, ["batch", dims.num_kv_heads, "past", dims.head_dim], name)
        for n in kv_names(dims.num_layers, "past")
    ]
    kv_out = [
        TensorSpec(n, ["batch", dims.num_kv_heads, "total", dims.head_dim], name)
        for n in kv_names(dims.num_layers, "present")
    ]
    inputs = [
        TensorSpec("inputs_embeds", ["batch", "seq", dims.hidden_size], name),
        TensorSpec("position_ids", [3, "batch", "seq"], "int64"),
        TensorSpec("attention_mask", ["batch", "total"], "int64"),
        *kv_in,
    ]
    return inputs, [TensorSpec("logits", ["batch", dims.vocab_size], "float32"), *kv_out]


def _dynamic_axes(specs: list[TensorSpec]) -> dict[str, dict[int, str]]:
    return {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in specs}


def save_onnx(model_proto: Any, path: Path) -> list[str]:
    """Save an ONNX model and check it by path; above protobuf's 2 GB limit the weights go to
    ``<name>.data`` beside it (one file). Returns the external-data files written (empty or that one).

    Works for protos of any size: only the path-based ONNX tools (save with external data,
    ``onnx.checker.check_model(path)``) touch a proto that may exceed 2 GB; its in-memory size is
    never serialised."""
    import onnx

    _pin_ir_version(model_proto)
    location = f"{path.name}.data"
    # onnx appends to an existing data file; a stale one (an earlier save of this graph) must go first.
    (path.parent / location).unlink(missing_ok=True)
    if _fits_protobuf(model_proto):
        onnx.save_model(model_proto, str(path))
        written = []
    else:
        onnx.save_model(
            model_proto,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=location,
            size_threshold=1024,
        )
        written = [location]
    onnx.checker.check_model(str(path))  # by path: also for graphs past 2 GB
    return written


def external_data_files(path: Path) -> list[str]:
    """The external-data files a saved graph references (relative to its folder), read from the proto
    without loading any weights."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return sorted({ExternalDataInfo(t).location for t in _all_tensors(model.graph) if uses_external_data(t)})


def _all_tensors(graph: Any) -> list[Any]:
    """Initializers and node-attribute tensors (Constant values: ModelOpt's quantizer constants are
    large enough to go external), subgraphs included."""
    import onnx

    out = [*graph.initializer]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                out.append(attr.t)
            out += list(attr.tensors)
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                out += _all_tensors(sub)
    return out


def graph_file_bytes(path: Path) -> int:
    """Bytes of a saved graph on disk: the ``.onnx`` plus every external-data file it references."""
    return path.stat().st_size + sum((path.parent / f).stat().st_size for f in external_data_files(path))


def _fits_protobuf(model_proto: Any) -> bool:
    """Below :data:`EXTERNAL_DATA_BYTES` when serialised? protobuf refuses to size a message past
    2 GB (``EncodeError``), which also answers the question."""
    from google.protobuf.message import EncodeError

    try:
        return int(model_proto.ByteSize()) < EXTERNAL_DATA_BYTES
    except (EncodeError, ValueError):
        return False


def _pin_ir_version(model_proto: Any) -> None:
    """IR 10 where INT4 tensors need it, never above :data:`MAX_IR_VERSION` (see there); the
    checker then validates the graph against the version written."""
    import onnx

    int4 = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    if any(t.data_type in int4 for t in model_proto.graph.initializer):
        model_proto.ir_version = max(model_proto.ir_version, INT4_IR_VERSION)
    model_proto.ir_version = min(model_proto.ir_version, MAX_IR_VERSION)


def trace_to_onnx(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
) -> list[str]:
    """The TorchScript exporter (see the module docstring for why), then a normal ONNX save."""
    import shutil
    import tempfile
    import warnings

    import onnx

    # A private folder: above 2 GB the tracer writes one external-data file per tensor beside its output.
    tmp_dir = Path(tempfile.mkdtemp(prefix=".trace-", dir=path.parent))
    tmp = tmp_dir / "model.onnx"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Trace-time constants are intended here (fixed keyframe grid; see module docstring).
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            torch.onnx.export(
                module,
                args,
                str(tmp),
                input_names=[s.name for s in inputs],
                output_names=[s.name for s in outputs],
                dynamic_axes=_dynamic_axes(inputs + outputs),
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp), load_external_data=False)
        if external_data_files(tmp):  # past 2 GB the tracer wrote one file per tensor
            return _gather_external_data(proto, tmp.parent, path)
        return save_onnx(proto, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _gather_external_data(proto: Any, src_dir: Path, path: Path) -> list[str]:
    """Save ``proto`` (whose tensors live in per-tensor files in ``src_dir``) to ``path`` with ONE
    ``<name>.data``, moving one tensor at a time with onnx's own external-data helpers.

    Written out because ``onnx.load`` + ``onnx.save`` (the library's way to re-home external data) holds
    every weight in memory at once: 12 GB more for a 3B decoder traced in fp32, beside the module."""
    import onnx
    from onnx.external_data_helper import (
        load_external_data_for_tensor,
        save_external_data,
        set_external_data,
        uses_external_data,
    )

    location = f"{path.name}.data"
    (path.parent / location).write_bytes(b"")
    for tensor in _all_tensors(proto.graph):
        if not uses_external_data(tensor):
            continue
        load_external_data_for_tensor(tensor, str(src_dir))  # this tensor's bytes only
        set_external_data(tensor, location)
        save_external_data(tensor, str(path.parent))  # appends, records offset and length
        tensor.ClearField("raw_data")
    _pin_ir_version(proto)
    onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path))
    return [location]


def example_decoder_args(
    dims: ModelDims, dtype: torch.dtype, seq: int = 5, past: int = 3, batch: int = 1
) -> tuple[torch.Tensor, ...]:
    """Tracing inputs with seq and past both > 1, so no dimension is specialised to 0 or 1."""
    gen = torch.Generator().manual_seed(0)
    embeds = torch.randn(batch, seq, dims.hidden_size, generator=gen).to(dtype)
    positions = (torch.arange(past, past + seq).view(1, 1, -1).expand(3, batch, seq)).contiguous()
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    kv = [
        torch.randn(batch, dims.num_kv_heads, past, dims.head_dim, generator=gen).to(dtype)
        for _ in range(2 * dims.num_layers)
    ]
    return (embeds, positions, mask, *kv)


def export_vision(model: Any, dims: ModelDims, path: Path, dtype: torch.dtype, precision: str) -> GraphSpec:
    start = time.perf_counter()
    inputs, outputs = vision_io(dims, dtype)
    module = VisionGraph(model, dims.image_grid_thw).eval()
    pixels = torch.randn(dims.num_patches, dims.patch_dim, generator=torch.Generator().manual_seed(0))
    extra = trace_to_onnx(module, (pixels.to(dtype),), path, inputs, outputs)
    return GraphSpec(VISION, path.name, inputs, outputs, precision, extra, time.perf_counter() - start)


def export_embed(model: Any, dims: ModelDims, path: Path, dtype: torch.dtype, precision: str) -> GraphSpec:
    start = time.perf_counter()
    inputs, outputs = embed_io(dims, dtype)
    ids = torch.tensor([[1, 2, 3]], dtype=torch.long)
    extra = trace_to_onnx(EmbedGraph(model).eval(), (ids,), path, inputs, outputs)
    return GraphSpec(EMBED, path.name, inputs, outputs, precision, extra, time.perf_counter() - start)


def export_decoder(
    module: nn.Module, dims: ModelDims, path: Path, dtype: torch.dtype, precision: str
) -> GraphSpec:
    """Export a :class:`DecoderGraph` (possibly carrying ModelOpt quantizers) to ``path``."""
    start = time.perf_counter()
    inputs, outputs = decoder_io(dims, dtype)
    extra = trace_to_onnx(module, example_decoder_args(dims, dtype), path, inputs, outputs)
    return GraphSpec(DECODER, path.name, inputs, outputs, precision, extra, time.perf_counter() - start)
