"""Run an export with ONNX Runtime: keyframe encoding, prefill with cached visual tokens, greedy decode
with an explicit KV cache. The edge runtime's ``onnx`` backend reuses :class:`VLMRunner`.

The generation logic is written once against a small :class:`GraphBackend` protocol (vision, embed,
decoder as numpy functions); :class:`OrtBackend` implements it with ONNX Runtime sessions, and the
parity check implements it with the PyTorch wrappers that were exported, so both are driven by the
same code. Prefill is incremental: :meth:`VLMRunner.extend` appends tokens to a :class:`KVState`, so a
caller can prefill [system + frames] once, keep the state, and append only a question later (the edge
runtime's cached prefix, docs/architecture.md#engine-and-backends). Greedy tokens equal ``model.generate``'s
(``tests/export/test_export_cpu.py``).

Chunked prefill: with ``max_chunk`` (a TensorRT-target export's ``tensorrt.plan.max_chunk``; None, no
chunking, for ONNX Runtime exports and older manifests), :meth:`VLMRunner.extend` runs the decoder on at
most that many new tokens per call, each call continuing from the previous one's state, as TensorRT-LLM's
chunked context does: the engines' profiles and activation memory are then sized for a chunk, not for a
whole prompt (:mod:`egovlm.export.fit`). Causal attention makes the result the unchunked one
(``tests/export/test_ort_runner_chunked.py``).

Imports neither torch nor transformers: the device needs numpy, onnxruntime and the export's processor
files, read by :mod:`egovlm.processing`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from egovlm.export.fit import chunk_sizes
from egovlm.export.positions import decode_positions, mrope_positions
from egovlm.processing import Processor

if TYPE_CHECKING:
    from egovlm.export.manifest import Manifest

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bfloat16)": np.float32}


def manifest_max_chunk(data: Mapping[str, Any]) -> int | None:
    """The prefill chunk a manifest body's TensorRT plan was sized for (``tensorrt.plan.max_chunk``);
    None (no chunking) for ONNX Runtime exports and manifests written before chunked prefill."""
    value = ((data.get("tensorrt") or {}).get("plan") or {}).get("max_chunk")
    return None if value is None else int(value)


class GraphBackend(Protocol):
    """The three graphs as numpy functions (names and shapes as in :mod:`egovlm.export.onnx_graphs`)."""

    kv_dtype: Any
    embed_dtype: Any

    def vision(self, pixel_values: np.ndarray) -> np.ndarray: ...

    def embed(self, input_ids: np.ndarray) -> np.ndarray: ...

    def decoder(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]: ...


@dataclass(frozen=True)
class RunnerDims:
    """The model facts the runner needs (a subset of the manifest's ``model`` block)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    image_token_id: int
    spatial_merge_size: int
    image_grid_thw: tuple[int, int, int]
    eos_token_ids: tuple[int, ...]
    keyframe_size: tuple[int, int]

    @property
    def merged_grid(self) -> tuple[int, int]:
        _, h, w = self.image_grid_thw
        return h // self.spatial_merge_size, w // self.spatial_merge_size

    @property
    def tokens_per_keyframe(self) -> int:
        gh, gw = self.merged_grid
        return gh * gw

    @classmethod
    def from_model_block(cls, model: Mapping[str, Any]) -> RunnerDims:
        return cls(
            num_layers=int(model["num_layers"]),
            num_kv_heads=int(model["num_kv_heads"]),
            head_dim=int(model["head_dim"]),
            image_token_id=int(model["image_token_id"]),
            spatial_merge_size=int(model["spatial_merge_size"]),
            image_grid_thw=tuple(int(x) for x in model["image_grid_thw"]),  # type: ignore[arg-type]
            eos_token_ids=tuple(int(x) for x in model["eos_token_ids"]),
            keyframe_size=(int(model["keyframe_size"][0]), int(model["keyframe_size"][1])),
        )


@dataclass
class KVState:
    """Decoder state after some tokens: per-layer K/V, how many tokens, the next M-RoPE position and
    the logits of the last token (None before any token).

    ``past`` may be longer than ``length`` (:meth:`cut`): the state is then the first ``length``
    positions, and the next decoder call copies just those, for the duration of that call."""

    past: list[Any]
    length: int
    next_position: int
    logits: np.ndarray | None = None

    def cut(self, length: int, next_position: int) -> KVState:
        """The state after this one's first ``length`` tokens, sharing its buffers (no copy now)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot cut a {self.length}-token state to {length} tokens")
        logits = self.logits if length == self.length else None
        return KVState(past=self.past, length=length, next_position=next_position, logits=logits)

    def dense_past(self) -> list[Any]:
        """``past`` holding exactly ``length`` positions (copies of the leading ones when cut)."""
        return [leading(p, self.length) for p in self.past]

    def dense(self) -> KVState:
        """This state with buffers of its own length (itself when they are already)."""
        if all(int(p.shape[2]) == self.length for p in self.past):
            return self
        return KVState(self.dense_past(), self.length, self.next_position, self.logits)


def leading(past: Any, n: int) -> Any:
    """The first ``n`` positions of one K/V tensor [batch, kv_heads, positions, head_dim] (numpy for
    ONNX Runtime, a device tensor for TensorRT), contiguous because the graphs take dense buffers;
    the tensor itself when it holds exactly ``n``."""
    if int(past.shape[2]) == n:
        return past
    view = past[:, :, :n, :]
    return view.contiguous() if hasattr(view, "contiguous") else np.ascontiguousarray(view)


@dataclass
class GenerationResult:
    tokens: list[int]
    text: str
    prompt_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    step_logits: list[np.ndarray] = field(default_factory=list)


class OrtBackend:
    """ONNX Runtime sessions for the three graphs (CPU by default; CUDA/TensorRT providers on a device)."""

    def __init__(
        self,
        paths: Mapping[str, Path],
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = list(providers or ["CPUExecutionProvider"])
        self.sessions = {
            name: ort.InferenceSession(str(path), sess_options=options, providers=providers)
            for name, path in paths.items()
        }
        dec_inputs = {i.name: i for i in self.sessions["decoder"].get_inputs()}
        self.embed_dtype = _ORT_DTYPES[dec_inputs["inputs_embeds"].type]
        self.kv_dtype = _ORT_DTYPES[dec_inputs["past_key.0"].type]
        self.vision_dtype = _ORT_DTYPES[self.sessions["vision"].get_inputs()[0].type]
        self.decoder_outputs = [o.name for o in self.sessions["decoder"].get_outputs()]

    def vision(self, pixel_values: np.ndarray) -> np.ndarray:
        out = self.sessions["vision"].run(None, {"pixel_values": pixel_values.astype(self.vision_dtype)})
        return np.asarray(out[0])

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.sessions["embed"].run(None, {"input_ids": input_ids.astype(np.int64)})[0])

    def decoder(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        out = self.sessions["decoder"].run(None, feeds)
        return np.asarray(out[0]), [np.asarray(x) for x in out[1:]]


class VLMRunner:
    """Greedy generation over a :class:`GraphBackend`; see the module docstring.

    ``processor``: an :class:`egovlm.processing.Processor` (the device loads the export's), or a
    transformers processor (the workstation's export pipeline hands the checkpoint's). Either way
    the runner's inputs and text come from :attr:`processing`, the torch-free one, so the export's
    parity check runs the device's preprocessing; :attr:`processor` keeps what was given (the
    parity reference runs the PyTorch model through transformers' own)."""

    def __init__(
        self,
        backend: GraphBackend,
        dims: RunnerDims,
        processor: Processor | Any,
        max_chunk: int | None = None,
    ) -> None:
        if max_chunk is not None and max_chunk < 1:
            raise ValueError(f"max_chunk must be at least 1 token (or None: no chunking), got {max_chunk}")
        self.backend = backend
        self.dims = dims
        self.processor = processor
        self.processing = Processor.of(processor)
        self.max_chunk = max_chunk

    @classmethod
    def from_export(
        cls,
        export_dir: Path | str,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        verify: bool = True,
        threads: int | None = None,
    ) -> VLMRunner:
        """Load a finished export (manifest verified) with ONNX Runtime."""
        from egovlm.export.manifest import load_manifest

        manifest = load_manifest(export_dir, verify=verify)
        return cls.from_manifest(manifest, providers=providers, threads=threads)

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        threads: int | None = None,
    ) -> VLMRunner:
        """Load an already loaded (and checked) manifest's graphs with ONNX Runtime; the edge runtime
        loads the manifest itself to check the prompt contract version too."""
        paths = {name: manifest.graph_path(name) for name in ("vision", "embed", "decoder")}
        backend = OrtBackend(paths, providers=providers, threads=threads)
        return cls.with_backend(manifest, backend)

    @classmethod
    def with_backend(cls, manifest: Manifest, backend: GraphBackend) -> VLMRunner:
        """A runner over any :class:`GraphBackend` (e.g. TensorRT engines) for ``manifest``'s model,
        with the processor the export ships and the prefill chunk its TensorRT plan was sized for."""
        return cls(
            backend,
            RunnerDims.from_model_block(manifest.model),
            Processor.from_dir(manifest.processor_dir),
            max_chunk=manifest_max_chunk(manifest.data),
        )

    # -- inputs -----------------------------------------------------------------------------------
    def pixel_values(self, image: np.ndarray) -> np.ndarray:
        """One keyframe (HxWx3 uint8 RGB, any size) -> the vision graph's pixel_values."""
        from egovlm.frames import resize_for_model

        pixels, grid = self.processing.pixel_values(resize_for_model(image, self.dims.keyframe_size))
        if grid != self.dims.image_grid_thw:
            raise ValueError(f"keyframe grid {grid} differs from the exported {self.dims.image_grid_thw}")
        return pixels

    def encode_keyframe(self, image: np.ndarray) -> np.ndarray:
        """Merged visual tokens ``[tokens_per_keyframe, hidden]`` of one keyframe (cache these)."""
        return self.backend.vision(self.pixel_values(image))

    def prompt_ids(self, messages: list[dict[str, Any]]) -> np.ndarray:
        """Token ids of chat ``messages`` (contract.build_messages) with each image placeholder expanded
        to the keyframe's token count, as the processor would, without touching pixels."""
        ids = self.processing.prompt_ids(messages, self.dims.tokens_per_keyframe)
        return np.asarray(ids, dtype=np.int64)

    # -- decoding ---------------------------------------------------------------------------------
    def empty_state(self, batch: int = 1) -> KVState:
        shape = (batch, self.dims.num_kv_heads, 0, self.dims.head_dim)
        past = [np.zeros(shape, dtype=self.backend.kv_dtype) for _ in range(2 * self.dims.num_layers)]
        return KVState(past=past, length=0, next_position=0)

    def _run(self, state: KVState, embeds: np.ndarray, positions: np.ndarray, next_position: int) -> KVState:
        seq = embeds.shape[0]
        feeds: dict[str, Any] = {
            "inputs_embeds": embeds[None].astype(self.backend.embed_dtype),
            "position_ids": positions[:, None, :].astype(np.int64),
            "attention_mask": np.ones((1, state.length + seq), dtype=np.int64),
        }
        for i, past in enumerate(state.dense_past()):
            feeds[f"past_{('key', 'value')[i % 2]}.{i // 2}"] = past
        logits, presents = self.backend.decoder(feeds)
        return KVState(
            past=presents,
            length=state.length + seq,
            next_position=next_position,
            logits=np.asarray(logits[0], dtype=np.float32),
        )

    def extend(
        self, state: KVState, input_ids: np.ndarray, visual_tokens: Sequence[np.ndarray] = ()
    ) -> KVState:
        """Append tokens (prefill). ``visual_tokens`` fill the image-token runs of ``input_ids`` in order."""
        ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
        grids = [self.dims.merged_grid] * len(visual_tokens)
        positions, next_position = mrope_positions(
            ids, self.dims.image_token_id, grids, start=state.next_position
        )
        embeds = np.array(self.backend.embed(ids[None])[0], dtype=np.float32)
        image_rows = np.flatnonzero(ids == self.dims.image_token_id)
        if visual_tokens:
            stacked = np.concatenate([np.asarray(v, dtype=np.float32) for v in visual_tokens], axis=0)
            if stacked.shape[0] != image_rows.size:
                raise ValueError(
                    f"{image_rows.size} image tokens in the prompt but {stacked.shape[0]} visual tokens"
                )
            embeds[image_rows] = stacked
        elif image_rows.size:
            raise ValueError(f"{image_rows.size} image tokens in the prompt but no visual tokens given")
        # Chunked prefill: each call continues from the previous call's state, whose buffers are
        # dropped by the next assignment (only the caller's start state and the last output remain).
        done = 0
        for size in chunk_sizes(ids.size, self.max_chunk):
            end = done + size
            after = next_position if end == ids.size else int(positions[:, :end].max()) + 1
            state = self._run(state, embeds[done:end], positions[:, done:end], after)
            done = end
        return state

    def step(self, state: KVState, token: int) -> KVState:
        """Append one generated text token (decode)."""
        ids = np.asarray([[token]], dtype=np.int64)
        embeds = np.asarray(self.backend.embed(ids)[0], dtype=np.float32)
        return self._run(state, embeds, decode_positions(state.next_position), state.next_position + 1)

    def greedy(
        self,
        state: KVState,
        max_new_tokens: int,
        keep_logits: bool = False,
        forced: Sequence[int] | None = None,
    ) -> tuple[list[int], list[np.ndarray], KVState]:
        """Greedy tokens from ``state`` until an EOS token (included) or ``max_new_tokens``.
        ``forced``: feed these tokens instead of the argmax (teacher forcing, for parity metrics)."""
        if state.logits is None:
            raise ValueError("greedy() needs a state with at least one token (call extend first)")
        tokens: list[int] = []
        logits: list[np.ndarray] = []
        limit = len(forced) if forced is not None else max_new_tokens
        while len(tokens) < limit:
            assert state.logits is not None
            if keep_logits:
                logits.append(state.logits)
            token = int(forced[len(tokens)]) if forced is not None else int(np.argmax(state.logits))
            tokens.append(token)
            if forced is None and token in self.dims.eos_token_ids:
                break
            if len(tokens) < limit:
                state = self.step(state, token)
        return tokens, logits, state

    def generate(
        self,
        frames: Sequence[Any],
        question: str,
        options: Mapping[str, str] | None = None,
        max_new_tokens: int = 64,
        visual_tokens: Sequence[np.ndarray] | None = None,
        keep_logits: bool = False,
    ) -> GenerationResult:
        """Frames (egovlm.frames.Frame) + question -> greedy answer, through the prompt contract."""
        from egovlm.contract import build_messages

        timings: dict[str, float] = {}
        start = time.perf_counter()
        if visual_tokens is None:
            visual_tokens = [self.encode_keyframe(f.image) for f in frames]
        timings["vision_s"] = time.perf_counter() - start
        ids = self.prompt_ids(build_messages(frames, question, options))
        start = time.perf_counter()
        state = self.extend(self.empty_state(), ids, visual_tokens)
        timings["prefill_s"] = time.perf_counter() - start
        start = time.perf_counter()
        tokens, logits, _ = self.greedy(state, max_new_tokens, keep_logits=keep_logits)
        timings["decode_s"] = time.perf_counter() - start
        text = self.processing.decode(tokens)
        return GenerationResult(
            tokens=tokens, text=text, prompt_tokens=int(ids.size), timings=timings, step_logits=logits
        )
