"""The backend interface: what the engine needs from a model runtime (torch, ONNX Runtime, TensorRT).

The engine owns the policy (which keyframes, when to rebuild, which state a question sees); a
backend owns the arithmetic, in three steps that map onto the cached-state idea
(docs/architecture.md#engine-and-backends):

1. :meth:`Backend.encode_keyframe`: the vision encoder on one keyframe, called ONCE per keyframe
   when it enters the buffer (the engine caches the result by keyframe id);
2. :meth:`Backend.build_prefix`: the language model's KV cache for [system prompt + frames],
   from the cached vision features, off the question path (the engine's worker thread);
3. :meth:`Backend.generate`: a question's own tokens prefilled on top of (a copy of) that
   prefix, then decoding.

:meth:`Backend.generate_from_scratch` is the reference: everything re-encoded at question time,
as a plain script would. Greedy answers of the two must be identical, token for token.

Concurrency contract: ``encode_keyframe``/``build_prefix`` run on the worker thread while
``generate`` may run on a question thread at the same time; the engine never runs two
``generate`` calls at once. A backend must keep these free of shared mutable state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as validated_dataclass

from egovlm.choice import AnswerChoice, AnswerRule
from egovlm.contract import SYSTEM_PROMPT

if TYPE_CHECKING:
    from egovlm.edge.buffer import Keyframe

TokenCallback = Callable[[str], None]
"""Receives decoded answer text piece by piece as it is generated (streaming)."""


class BackendError(RuntimeError):
    """A backend cannot run the request; the message says why."""


@validated_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class GenerationParams:
    """Decoding settings, defined once: a device profile's ``generation:`` section, the engine's
    defaults (``EngineParams.generation``) and what a backend decodes one question with (the
    engine's, with the question's own overrides). Validated (pydantic) whenever one is made, so a
    profile with ``max_new_tokens: 0`` is refused at load time, naming the field."""

    max_new_tokens: Annotated[int, Field(ge=1)] = 256
    do_sample: bool = False
    temperature: Annotated[float, Field(gt=0)] = 0.7
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.9
    seed: int | None = None  # sampling seed (None: unseeded)
    # options: a question with options is answered with one of them, its text or letter (egovlm.choice,
    # the rule eval and GRPO's rollouts use); free: whatever the model writes
    answers: AnswerRule = "options"
    return_scores: bool = False  # keep per-step logits (tests compare cached vs scratch)


@dataclass(frozen=True)
class VisionFeatures:
    """One keyframe's vision-encoder output, in the backend's own form (``data``)."""

    keyframe_id: int
    n_tokens: int
    grid_thw: tuple[int, int, int]
    data: Any
    encode_ms: float


@dataclass(frozen=True)
class PrefixState:
    """The language model's state after [system prompt + frames] for one buffer snapshot.

    ``keyframes`` are the snapshot's keyframes (time order) and ``version`` its buffer version:
    the state and the frame list it was built from travel together, so a question always sees
    a consistent pair. ``data`` is the backend's payload (e.g. a KV cache)."""

    version: int
    keyframe_ids: tuple[int, ...]
    system_prompt: str
    n_tokens: int
    build_ms: float
    data: Any
    reused_tokens: int = 0  # prefix tokens taken over from the previous state, not recomputed


@dataclass
class Generation:
    """One answer's tokens and timings (measured inside the backend)."""

    text: str
    token_ids: list[int]
    n_prompt_tokens: int  # whole prompt (prefix + question)
    n_prefill_tokens: int  # tokens actually computed at question time (question only when cached)
    prefill_ms: float  # generate call start -> first token (includes vision when from scratch)
    decode_ms: float  # first token -> last token
    prepare_ms: float = 0.0  # prompt rendering, tokenisation, positions (before prefill)
    scores: list[Any] | None = None  # per-step logits when GenerationParams.return_scores
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def n_new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def decode_tok_s(self) -> float:
        n = len(self.token_ids) - 1
        return n / (self.decode_ms / 1000.0) if n > 0 and self.decode_ms > 0 else 0.0


class Backend(ABC):
    """A model runtime. Implementations: ``torch`` (transformers, a model folder); ``onnx`` and
    ``tensorrt`` (an export folder, loaded through its manifest)."""

    name: str = "abstract"
    # True when build_prefix reuses the KV of the keyframes a new snapshot shares with
    # ``previous`` (the engine then passes its current state, and rebuilds in chunks).
    supports_prefix_reuse: bool = False

    @property
    @abstractmethod
    def keyframe_size(self) -> tuple[int, int]:
        """(width, height) every keyframe is resized to before encoding."""

    @abstractmethod
    def encode_keyframe(self, keyframe_id: int, image: Any) -> VisionFeatures:
        """Vision-encoder output for one model-size RGB keyframe (HxWx3 uint8)."""

    @abstractmethod
    def build_prefix(
        self,
        version: int,
        keyframes: Sequence[Keyframe],
        features: Sequence[VisionFeatures],
        system_prompt: str = SYSTEM_PROMPT,
        previous: PrefixState | None = None,
    ) -> PrefixState:
        """KV state for [system prompt + frames], ``keyframes`` in time order. ``previous``: the
        engine's current state, passed only when :attr:`supports_prefix_reuse` (a backend without
        reuse ignores it)."""

    @abstractmethod
    def generate(
        self,
        prefix: PrefixState,
        question: str,
        options: Mapping[str, str] | None,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
    ) -> Generation:
        """Answer on top of a prefix state: only the question's tokens are prefilled. With
        ``options`` and ``params.answers == "options"`` the answer is one of them (:func:`answer_rule`)."""

    @abstractmethod
    def generate_from_scratch(
        self,
        keyframes: Sequence[Keyframe],
        question: str,
        options: Mapping[str, str] | None,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> Generation:
        """Reference path: encode every frame and prefill the whole prompt now."""

    def describe(self) -> dict[str, Any]:
        """What is loaded (for /status and benchmark JSON)."""
        return {"backend": self.name}


def answer_rule(
    tokenizer: Any, options: Mapping[str, str] | None, params: GenerationParams
) -> AnswerChoice | None:
    """The rule a backend decodes one question under: the options' :class:`egovlm.choice.AnswerChoice`,
    or None (an open question, or ``answers: free``)."""
    if not options or params.answers != "options":
        return None
    return AnswerChoice(tokenizer, options)
