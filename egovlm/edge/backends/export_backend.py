"""The cached-prefix steps for an export/ directory, over export's :class:`VLMRunner`.

The ``onnx`` and ``tensorrt`` backends differ only in what runs the three graphs (an ONNX Runtime
session or a TensorRT engine, both behind export's ``GraphBackend`` protocol); everything else is
here, once:

* vision: :meth:`VLMRunner.encode_keyframe` on ONE keyframe when it enters the buffer;
* prefix: the contract's prompt cut after the last frame (:mod:`egovlm.edge.backends.prompt`, the
  same split the torch backend uses), image placeholders expanded to the cached visual tokens,
  prefilled with :meth:`VLMRunner.extend` into a :class:`KVState`. With ``previous``, the KV of
  the leading keyframes both snapshots share is cut from the old state (:meth:`KVState.cut`: its
  leading positions are copied for the first decoder call only) and only the rest is prefilled
  (causal attention: earlier tokens never depend on later ones);
* question: :meth:`VLMRunner.extend` on the prefix state with the question's tokens only, then
  decoding with :meth:`VLMRunner.step`. ``extend`` returns a NEW state (the graphs write their
  ``present_*`` outputs to new buffers), so the prefix state is shared by every question and
  never written. Each decode step holds its input and output state only (the question's first
  state is not kept once decoding moves on): :func:`egovlm.export.fit.kv_live_tokens` counts these.
  (Writing each step into preallocated buffers, e.g. ONNX Runtime's IOBinding or TensorRT output
  addresses into a KV of the conversation's length, would save a state's copy per step; not done.)

The decode loop is written here rather than calling :meth:`VLMRunner.greedy` because a question
also needs streaming text, sampling (when a profile asks for it) and the time of the first token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.choice import AnswerChoice
from egovlm.contract import SYSTEM_PROMPT, build_messages
from egovlm.edge.backends.base import (
    BackendError,
    Generation,
    GenerationParams,
    PrefixState,
    TokenCallback,
    VisionFeatures,
    answer_rule,
)
from egovlm.edge.backends.prompt import PrefixPrompt, PromptBackend, TokenStream
from egovlm.edge.buffer import Keyframe, keyframe_frames
from egovlm.export.ort_runner import KVState, VLMRunner
from egovlm.export.positions import mrope_positions


@dataclass(frozen=True)
class _ExportPrefix:
    prompt: PrefixPrompt  # what the prefix was rendered from
    input_ids: np.ndarray  # (P,) int64, image placeholders expanded
    kv: KVState  # after the P prefix tokens; shared by every question, never written


class ExportBackend(PromptBackend):
    """A :class:`Backend` over a :class:`VLMRunner` loaded from an export's manifest."""

    name = "export"

    def __init__(
        self,
        runner: VLMRunner,
        export_dir: Path,
        info: Mapping[str, Any] | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.runner = runner
        self.export_dir = export_dir
        self.info = dict(info or {})
        self.config_path = config_path or export_dir / "processor" / "config.json"
        self.processor = runner.processing  # torch-free (egovlm.processing)
        self.tokenizer = self.processor.tokenizer
        self.dims = runner.dims
        self.image_token_id = self.dims.image_token_id
        self.vision_end_id = int(self.tokenizer.convert_tokens_to_ids("<|vision_end|>"))
        self.vision_calls = 0  # how many times the vision graph ran (tests, status, benchmark)

    @property
    def keyframe_size(self) -> tuple[int, int]:
        return self.dims.keyframe_size

    @property
    def config(self) -> dict[str, Any]:
        """The model's config.json (the export ships it beside the processor): the memory check
        and the latency benchmark read its sizes."""
        import json

        if not self.config_path.is_file():
            raise BackendError(f"{self.config_path}: missing (the export ships the model config there)")
        return dict(json.loads(self.config_path.read_text()))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": str(self.export_dir),
            "keyframe_size": list(self.keyframe_size),
            **self.info,
        }

    # -- vision, once per keyframe -------------------------------------------------------------

    def encode_keyframe(self, keyframe_id: int, image: np.ndarray) -> VisionFeatures:
        t0 = time.perf_counter()
        size = (image.shape[1], image.shape[0])
        if size != self.keyframe_size:
            raise BackendError(
                f"keyframe {keyframe_id}: image is {size}, the export expects {self.keyframe_size}"
            )
        tokens = self.runner.encode_keyframe(image)
        self.vision_calls += 1
        return VisionFeatures(
            keyframe_id=keyframe_id,
            n_tokens=int(tokens.shape[0]),
            grid_thw=self.dims.image_grid_thw,
            data=tokens,
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
    ) -> tuple[_ExportPrefix, int]:
        """The tokens not reused, extended onto the cut of ``previous`` (or an empty state).
        Positions need no separate check: with one fixed keyframe grid they are a function of the
        ids (egovlm.export.positions)."""
        ids = np.asarray(prompt.ids, dtype=np.int64)
        if previous is not None and reused:
            start = self._cut(previous.data.kv, ids, reused)
        else:
            start = self.runner.empty_state()
        if reused < ids.size:
            kv = self.runner.extend(start, ids[reused:], [f.data for f in features[shared:]])
        else:  # every token reused: a prefix of the old state, in buffers of its own
            kv = start.dense()
        return _ExportPrefix(prompt, ids, kv), reused

    def _cut(self, kv: KVState, ids: np.ndarray, n: int) -> KVState:
        """The state after the first ``n`` tokens of ``kv`` (sharing its buffers, which stay intact:
        the next decoder call copies the leading positions it needs) and the M-RoPE position that
        follows token n-1. All of it: the same state (states are never written)."""
        if n == kv.length:
            return kv.cut(n, kv.next_position)
        images = int(np.count_nonzero(ids[:n] == self.dims.image_token_id)) // self.dims.tokens_per_keyframe
        _, next_position = mrope_positions(
            ids[:n], self.dims.image_token_id, [self.dims.merged_grid] * images
        )
        return kv.cut(n, next_position)

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
        data: _ExportPrefix = prefix.data
        ids = np.asarray(suffix, dtype=np.int64)
        t_prepared = time.perf_counter()
        n_prompt = int(data.input_ids.size + ids.size)
        return self._decode(data.kv, ids, (), t0, t_prepared, n_prompt, params, on_text, choice)

    def generate_from_scratch(
        self,
        keyframes: Sequence[Keyframe],
        question: str,
        options: Mapping[str, str] | None,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> Generation:
        """What a plain script over the export does: every frame through the vision graph, the
        whole prompt prefilled (``VLMRunner.generate``'s steps, with streaming and timing)."""
        t0 = time.perf_counter()
        frames = keyframe_frames(keyframes)
        ids = self.runner.prompt_ids(build_messages(frames, question, options, system_prompt=system_prompt))
        t_prepared = time.perf_counter()
        visual = [self.runner.encode_keyframe(f.image) for f in frames]
        choice = answer_rule(self.tokenizer, options, params)
        return self._decode(
            self.runner.empty_state(), ids, visual, t0, t_prepared, int(ids.size), params, on_text, choice
        )

    def _decode(
        self,
        start: KVState,
        ids: np.ndarray,
        visual: Sequence[np.ndarray],
        t0: float,
        t_prepared: float,
        n_prompt: int,
        params: GenerationParams,
        on_text: TokenCallback | None,
        choice: AnswerChoice | None = None,
    ) -> Generation:
        """Prefill ``ids`` after ``start``, then decode. The prefill happens here so that the only
        reference to each state is ``state``: every step frees the state before last. ``choice``:
        the options' answer rule, applied to the logits before the token is chosen."""
        state = self.runner.extend(start, ids, visual)
        choose = _chooser(params)
        stream = TokenStream(self.tokenizer, on_text)
        tokens: list[int] = []
        scores: list[np.ndarray] = []
        while len(tokens) < params.max_new_tokens:
            assert state.logits is not None
            if params.return_scores:
                scores.append(state.logits)
            token = choose(state.logits if choice is None else choice.restrict(tokens, state.logits))
            tokens.append(token)
            stream.put([token])
            if token in self.dims.eos_token_ids or len(tokens) >= params.max_new_tokens:
                break
            state = self.runner.step(state, token)
        stream.end()
        first = stream.first_token_at or t_prepared
        last = stream.last_token_at or first
        return Generation(
            text=self.processor.decode(tokens),
            token_ids=tokens,
            n_prompt_tokens=n_prompt,
            n_prefill_tokens=int(ids.size),
            prefill_ms=(first - t_prepared) * 1000,
            decode_ms=(last - first) * 1000,
            prepare_ms=(t_prepared - t0) * 1000,
            scores=scores if params.return_scores else None,
        )


def _chooser(params: GenerationParams) -> Callable[[np.ndarray], int]:
    """Greedy argmax, or temperature + top-p sampling with its own seeded generator.

    Hand-written because transformers' logits processors work on torch tensors and this path is
    torch-free (numpy logits from the graphs)."""
    if not params.do_sample:
        return lambda logits: int(np.argmax(logits))
    rng = np.random.default_rng(params.seed)

    def sample(logits: np.ndarray) -> int:
        z = logits.astype(np.float64) / max(params.temperature, 1e-6)
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < params.top_p  # the smallest set reaching top_p
        kept = order[keep]
        return int(rng.choice(kept, p=p[kept] / p[kept].sum()))

    return sample


def load_export_manifest(path: str | Path, backend: str) -> Any:
    """The export's manifest, hash-verified and checked against this runtime's prompt contract.

    A model folder (config.json, no manifest.json) is named as such: it is the torch backend's
    input, and the most likely mix-up."""
    from egovlm.contract import CONTRACT_VERSION
    from egovlm.export.manifest import MANIFEST, ManifestError, load_manifest

    root = Path(path)
    if not root.is_dir():
        raise BackendError(f"{backend} backend: export folder not found: {root}")
    if not (root / MANIFEST).is_file() and (root / "config.json").is_file():
        raise BackendError(
            f"{root} is a model folder (config.json, no {MANIFEST}); the {backend} backend runs an "
            f"export of it: `egovlm export --model {root} --out EXPORT_DIR --target cpu` (or a Jetson "
            "target for tensorrt), then --model EXPORT_DIR; or run this folder with --backend torch"
        )
    try:
        return load_manifest(root, verify=True, contract_version=CONTRACT_VERSION)
    except ManifestError as e:
        raise BackendError(f"{backend} backend: {e}") from None
