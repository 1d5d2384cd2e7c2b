"""The ``torch`` backend: transformers' Qwen2.5-VL on CPU or CUDA, with a cached visual prefix.

* Vision: ``model.get_image_features`` on ONE keyframe when it enters the buffer. The vision
  tower attends within an image only (block-diagonal ``cu_seqlens``), so per-keyframe features
  equal those of a batched from-scratch call.
* Prefix: one forward over [system + frames] with the cached features passed as
  ``mm_encoder_outputs`` (transformers scatters them into the image placeholders), filling a
  ``DynamicCache``.
* Question: ``model.generate`` continues from a copy of that cache with the FULL prompt ids
  (transformers' documented prefix-reuse pattern: it prefills only the uncached tail), and with
  explicit M-RoPE ``position_ids`` from the model's own ``get_rope_index`` over the full
  sequence, in the 4-row form generate itself builds ([text positions; t; h; w]). Explicit
  positions also keep generate away from the model's ``rope_deltas`` attribute, which the
  from-scratch path mutates.
* Attention of the language model: :func:`grouped_query_sdpa` (registered with transformers'
  ``AttentionInterface``) instead of the stock ``sdpa``, whose masked multi-token path (a question
  on top of the cached prefix) copies every layer's K and V 8x (Qwen2.5-VL-3B: 16 query heads on 2
  KV heads) before attending; profiled at the 3B's widths this copy was ~20 % of the cached TTFT at
  K=32 (egovlm/benchmarks/README.md, "latency at the 3B's shape").
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AttentionInterface, AttentionMaskInterface, DynamicCache, LogitsProcessorList
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling

from egovlm.choice import AnswerChoice, AnswerChoiceProcessor
from egovlm.contract import SYSTEM_PROMPT
from egovlm.edge.backends.base import (
    BackendError,
    Generation,
    GenerationParams,
    PrefixState,
    TokenCallback,
    VisionFeatures,
    answer_rule,
)
from egovlm.edge.backends.prompt import (
    PrefixPrompt,
    PromptBackend,
    PromptBoundaryError,
    TokenStream,
    render_prompt,
)
from egovlm.edge.buffer import Keyframe, keyframe_frames
from egovlm.models.loading import LoadedModel, load_model

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}
DTYPES |= {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
GQA_ATTENTION = "egovlm_gqa_sdpa"  # the language model's attention implementation (see grouped_query_sdpa)


def grouped_query_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA for grouped-query attention with a mask, without repeating K and V per query head.

    Several tokens attending over a cache with a mask (a question after the cached prefix, a rebuild
    chunk) is the one case where transformers' ``sdpa_attention_forward`` materialises ``repeat_kv``:
    a copy of the whole K and V, ``num_key_value_groups`` times over, every layer, every question.
    Here the query heads that share a KV head are folded into the query length instead ([b, kv_heads,
    groups * q, d], the mask tiled to match), which is the same arithmetic (each query row attends to
    its own KV head; rows are independent) with no K/V copy. Everything else (one query token, no mask,
    no grouping) goes to the stock function. Written by hand because neither transformers nor torch's
    CPU SDPA (``enable_gqa`` is slower here, measured) avoids the copy for this case."""
    groups = int(getattr(module, "num_key_value_groups", 1))
    b, heads, q, d = query.shape
    if groups == 1 or q == 1 or attention_mask is None or kwargs.get("position_bias") is not None:
        stock: tuple[torch.Tensor, None] = sdpa_attention_forward(
            module, query, key, value, attention_mask, **kwargs
        )
        return stock
    kv_heads = key.shape[1]
    folded = query.reshape(b, kv_heads, groups * q, d)  # heads h = kv * groups + g (repeat_kv's order)
    mask = attention_mask.expand(b, heads, q, attention_mask.shape[-1]).reshape(b, kv_heads, groups * q, -1)
    out = torch.nn.functional.scaled_dot_product_attention(
        folded, key, value, attn_mask=mask, dropout_p=kwargs.get("dropout", 0.0), scale=kwargs.get("scaling")
    )
    return out.reshape(b, heads, q, d).transpose(1, 2).contiguous(), None


AttentionInterface.register(GQA_ATTENTION, grouped_query_sdpa)
AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)  # the same boolean masks as sdpa


@dataclass(frozen=True)
class _TorchPrefix:
    prompt: PrefixPrompt  # what the prefix was rendered from
    input_ids: torch.Tensor  # (1, P) with image placeholders expanded
    mm_token_type_ids: torch.Tensor  # (1, P)
    image_grid_thw: torch.Tensor  # (K, 3)
    position_ids: torch.Tensor  # (4, 1, P)
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (keys, values); never written


class TorchBackend(PromptBackend):
    """Qwen2.5-VL through transformers. ``loaded`` comes from :func:`egovlm.models.load_model`."""

    name = "torch"

    def __init__(self, loaded: LoadedModel) -> None:
        if loaded.model.device.type == "cpu":
            _guard_cuda_probe()
        self.loaded = loaded
        self.model = loaded.model
        if self.model.config.get_text_config()._attn_implementation == "sdpa":
            self.model.set_attn_implementation({"text_config": GQA_ATTENTION})
        self.processor = loaded.processor
        self.tokenizer = loaded.processor.tokenizer
        self.image_token_id = int(self.model.config.image_token_id)
        self.vision_end_id = int(self.model.config.vision_end_token_id)
        self.vision_calls = 0  # how many times the vision encoder ran (tests, status)

    @classmethod
    def load(
        cls, model: str | Path, device: str = "cpu", dtype: str = "float32", threads: int | None = None
    ) -> TorchBackend:
        """Load a model folder or hub id. ``threads`` sets torch's intra-op threads (process-wide);
        on a shared or small CPU, fewer threads than cores avoids spinning OpenMP barriers."""
        if dtype not in DTYPES:
            raise BackendError(f"torch backend: unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"torch backend: device {device!r} requested but CUDA is not available")
        if threads is not None:
            torch.set_num_threads(threads)
        return cls(load_model(model, dtype=DTYPES[dtype], device=device))

    @property
    def keyframe_size(self) -> tuple[int, int]:
        return self.loaded.keyframe_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.loaded.source,
            "device": str(self.device),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "keyframe_size": list(self.keyframe_size),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "threads": torch.get_num_threads(),
        }

    @property
    def config(self) -> Any:
        """The model's transformers config (the memory check reads its sizes)."""
        return self.model.config

    # -- vision, once per keyframe -------------------------------------------------------------

    def encode_keyframe(self, keyframe_id: int, image: np.ndarray) -> VisionFeatures:
        t0 = time.perf_counter()
        size = (image.shape[1], image.shape[0])
        if size != self.keyframe_size:
            raise BackendError(
                f"keyframe {keyframe_id}: image is {size}, the model expects {self.keyframe_size}"
            )
        pixels = self.processor.image_processor(images=[Image.fromarray(image)], return_tensors="pt")
        grid = pixels["image_grid_thw"].to(self.device)
        with torch.no_grad():
            out = self.model.get_image_features(pixels["pixel_values"].to(self.device), grid)
        self.vision_calls += 1
        feats = out.pooler_output[0]
        return VisionFeatures(
            keyframe_id=keyframe_id,
            n_tokens=int(feats.shape[0]),
            grid_thw=(int(grid[0, 0]), int(grid[0, 1]), int(grid[0, 2])),
            data=feats,
            encode_ms=(time.perf_counter() - t0) * 1000,
        )

    # -- prefix KV, off the question path ------------------------------------------------------

    def _prefill(
        self,
        prompt: PrefixPrompt,
        features: Sequence[VisionFeatures],
        previous: PrefixState | None,
        shared: int,
        reused: int,
    ) -> tuple[_TorchPrefix, int]:
        """One forward over the tokens not reused, the cached features scattered into the image
        placeholders. Reuse also needs the M-RoPE positions of the reused tokens to be unchanged."""
        input_ids = torch.tensor([prompt.ids], dtype=torch.long, device=self.device)
        mm = (input_ids == self.image_token_id).to(torch.int)
        grid = torch.tensor([f.grid_thw for f in features], dtype=torch.long, device=self.device)
        positions = self._positions(input_ids, mm, grid)
        old = previous.data if previous is not None else None
        if (
            old is not None
            and reused
            and not torch.equal(old.position_ids[..., :reused], positions[..., :reused])
        ):
            shared, reused = 0, 0
        kv = None
        if previous is not None and reused == len(prompt.ids):  # same frames (or a leading subset)
            kv = tuple((k[..., :reused, :], v[..., :reused, :]) for k, v in previous.data.kv)
        if kv is None:
            cache = DynamicCache(config=self.model.config.get_text_config())
            if reused:
                assert previous is not None
                for layer, (keys, values) in zip(cache.layers, previous.data.kv, strict=True):
                    layer.lazy_initialization(keys, values)  # views: the old state stays intact
                    layer.keys, layer.values = keys[..., :reused, :], values[..., :reused, :]
            image = BaseModelOutputWithPooling(pooler_output=tuple(f.data for f in features[shared:]))
            with torch.no_grad():
                self.model(
                    input_ids=input_ids[:, reused:],
                    attention_mask=torch.ones_like(input_ids),
                    position_ids=positions[..., reused:],
                    past_key_values=cache,
                    mm_encoder_outputs={"image": image},
                    use_cache=True,
                    logits_to_keep=1,
                )
            kv = tuple((layer.keys, layer.values) for layer in cache.layers)
        return _TorchPrefix(prompt, input_ids, mm, grid, positions, kv), reused

    def _positions(self, input_ids: torch.Tensor, mm: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """M-RoPE positions from the model's own get_rope_index, in generate's 4-row layout."""
        pos3, _ = self.model.model.get_rope_index(input_ids, mm_token_type_ids=mm, image_grid_thw=grid)
        text = torch.arange(input_ids.shape[1], device=input_ids.device).view(1, 1, -1)
        return torch.cat([text, pos3], dim=0)

    def _cache_view(self, prefix: _TorchPrefix) -> DynamicCache:
        """A cache for one question that starts from the prefix without copying it.

        DynamicLayer.update concatenates into NEW tensors, so the shared prefix tensors are
        never written; a deep copy (HF's usual advice) would memcpy the whole prefix KV per
        question for nothing. tests/edge/test_engine.py checks the prefix is left intact."""
        cache = DynamicCache(config=self.model.config.get_text_config())
        if len(cache.layers) != len(prefix.kv):
            raise BackendError(f"cache has {len(cache.layers)} layers, prefix {len(prefix.kv)}")
        for layer, (keys, values) in zip(cache.layers, prefix.kv, strict=True):
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
        return cache

    # -- questions -----------------------------------------------------------------------------

    def _generate_after(
        self,
        prefix: PrefixState,
        suffix: list[int],
        t0: float,
        params: GenerationParams,
        on_text: TokenCallback | None,
        choice: AnswerChoice | None,
    ) -> Generation:
        """``generate`` on the full ids over a view of the prefix cache: it prefills only the tail."""
        data: _TorchPrefix = prefix.data
        tail = torch.tensor([suffix], dtype=torch.long, device=self.device)
        input_ids = torch.cat([data.input_ids, tail], dim=1)
        mm = torch.cat([data.mm_token_type_ids, torch.zeros_like(tail, dtype=torch.int)], dim=1)
        positions = self._positions(input_ids, mm, data.image_grid_thw)
        n_prefix = data.input_ids.shape[1]
        if not torch.equal(positions[..., :n_prefix], data.position_ids):
            raise PromptBoundaryError("M-RoPE positions of the prefix changed with the question")
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "position_ids": positions,
            "mm_token_type_ids": mm,
            "past_key_values": self._cache_view(data),
        }
        return self._run(inputs, t0, time.perf_counter(), len(suffix), params, on_text, choice)

    def generate_from_scratch(
        self,
        keyframes: Sequence[Keyframe],
        question: str,
        options: Mapping[str, str] | None,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> Generation:
        """What a plain transformers script does: processor on all frames, then generate."""
        t0 = time.perf_counter()
        frames = keyframe_frames(keyframes)
        prompt = render_prompt(self.processor.apply_chat_template, frames, question, options, system_prompt)
        inputs = self.processor(text=[prompt.full], images=[f.pil() for f in frames], return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        n = int(inputs["input_ids"].shape[1])
        choice = answer_rule(self.tokenizer, options, params)
        return self._run(inputs, t0, time.perf_counter(), n, params, on_text, choice)

    def _run(
        self,
        inputs: dict[str, Any],
        t0: float,
        t_prepared: float,
        n_prefill: int,
        params: GenerationParams,
        on_text: TokenCallback | None,
        choice: AnswerChoice | None,
    ) -> Generation:
        stream = TokenStream(self.tokenizer, on_text, skip_prompt=True)
        sampling: dict[str, Any] = {"do_sample": params.do_sample}
        if params.do_sample:
            sampling |= {"temperature": params.temperature, "top_p": params.top_p}
        else:
            sampling |= {"temperature": None, "top_p": None, "top_k": None}
        n_prompt = int(inputs["input_ids"].shape[1])
        if choice is not None:
            sampling["logits_processor"] = LogitsProcessorList([AnswerChoiceProcessor([choice], n_prompt)])
        with _seeded(params.seed), torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=params.max_new_tokens,
                streamer=stream,
                return_dict_in_generate=True,
                output_logits=params.return_scores,
                **sampling,
            )
        t_end = time.perf_counter()
        new = out.sequences[0, n_prompt:].tolist()
        first = stream.first_token_at or t_end
        return Generation(
            text=self.tokenizer.decode(new, skip_special_tokens=True),
            token_ids=new,
            n_prompt_tokens=n_prompt,
            n_prefill_tokens=n_prefill,
            prefill_ms=(first - t_prepared) * 1000,
            decode_ms=((stream.last_token_at or first) - first) * 1000,
            prepare_ms=(t_prepared - t0) * 1000,
            scores=[s[0].float().cpu() for s in out.logits] if params.return_scores else None,
        )


def _guard_cuda_probe() -> None:
    """Keep transformers' CUDA-graph probe from killing a CPU-only process.

    Qwen2.5-VL's forward calls ``torch.cuda.is_current_stream_capturing()`` (through
    ``transformers.utils.import_utils.is_tracing``) on every image placeholder check. With a CUDA
    build of torch and no NVIDIA driver (docs/architecture.md#dependency-facts), that call
    normally raises (and transformers catches it), but in some processes (seen in ``egovlm edge
    run`` with GStreamer loaded) it reaches a ``noexcept`` error-log constructor that throws,
    and the process aborts (std::terminate). Without a usable GPU nothing can be capturing, so
    the probe is answered directly. Only installed when CUDA is unavailable."""
    if torch.cuda.is_available() or getattr(torch.cuda.is_current_stream_capturing, "_egovlm_guard", False):
        return

    def not_capturing() -> bool:
        return False

    not_capturing._egovlm_guard = True  # type: ignore[attr-defined]
    torch.cuda.is_current_stream_capturing = not_capturing


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Sampling with a seed must not disturb the process-wide RNG other threads use."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
