"""The contract's prompt for a cached-prefix backend: split into a cacheable prefix and a
per-question suffix, as token ids, and :class:`PromptBackend`, the template the torch and export
backends fill in with their arithmetic.

The contract (egovlm.contract) renders frames first, each ``Frame i (t=x.x s): <image>\\n``, then
the question. The prefix ends at the end of the last frame's ``"\\n"`` text item; everything after
it (question, options, end of turn, assistant header) is the suffix. Caching is only correct if
tokenising prefix and suffix separately gives the same ids as tokenising the whole prompt, so
:func:`split_ids` checks exactly that on every question and refuses otherwise.

Image placeholders: the chat template renders one ``<|image_pad|>`` per image; the processor
expands it to one token per merged vision patch. :func:`expand_image_tokens` does that expansion
from the cached per-keyframe token counts (the pixels are not re-processed at question time).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from egovlm.choice import AnswerChoice
from egovlm.contract import SYSTEM_PROMPT, build_messages, check_question_tokens, question_text
from egovlm.edge.backends.base import (
    Backend,
    BackendError,
    Generation,
    GenerationParams,
    PrefixState,
    TokenCallback,
    VisionFeatures,
    answer_rule,
)
from egovlm.edge.buffer import Keyframe, keyframe_frames
from egovlm.frames import Frame
from egovlm.processing import TextStream

# The prefix does not depend on the question; any question renders it.
PLACEHOLDER_QUESTION = "?"


class PromptBoundaryError(RuntimeError):
    """The cached prefix and the question's prompt disagree (text or tokens)."""


@dataclass(frozen=True)
class PromptText:
    prefix: str
    suffix: str

    @property
    def full(self) -> str:
        return self.prefix + self.suffix


def render_prompt(
    apply_chat_template: Callable[..., Any],
    frames: Sequence[Frame],
    question: str,
    options: Mapping[str, str] | None,
    system_prompt: str,
) -> PromptText:
    """Render the chat prompt and cut it after the last frame's newline."""
    messages = build_messages(frames, question, options, system_prompt=system_prompt)
    text = apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    block = question_text(question, options)
    cut = text.rfind(block)
    if cut < 0:
        raise PromptBoundaryError("the rendered prompt does not contain the question block")
    prefix, suffix = text[:cut], text[cut:]
    if not prefix.endswith("\n"):
        raise PromptBoundaryError(
            f"the prefix must end with the last frame's newline, ends with {prefix[-20:]!r}"
        )
    return PromptText(prefix, suffix)


def text_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def split_ids(tokenizer: Any, prompt: PromptText, prefix_ids: Sequence[int] | None = None) -> list[int]:
    """Suffix token ids, after checking that tokenising the full prompt yields prefix + suffix.

    ``prefix_ids`` are the (unexpanded) ids the cache was built from; when given they must equal
    the prefix part of the full tokenisation too. A suffix longer than the contract's
    ``MAX_QUESTION_TOKENS`` raises :class:`egovlm.contract.QuestionTooLongError` before the model runs."""
    suffix = text_ids(tokenizer, prompt.suffix)
    check_question_tokens(len(suffix))
    full = text_ids(tokenizer, prompt.full)
    prefix = list(prefix_ids) if prefix_ids is not None else text_ids(tokenizer, prompt.prefix)
    if full != prefix + suffix:
        n = next((i for i, (a, b) in enumerate(zip(full, prefix + suffix, strict=False)) if a != b), None)
        raise PromptBoundaryError(
            f"prefix/suffix tokenisation differs from the full prompt's (first mismatch at token {n}; "
            f"{len(prefix)} prefix + {len(suffix)} suffix vs {len(full)} tokens): the cache cannot be reused"
        )
    return suffix


def expand_image_tokens(ids: Sequence[int], image_token_id: int, counts: Sequence[int]) -> list[int]:
    """Replace the i-th image placeholder by ``counts[i]`` copies, as the processor does."""
    out: list[int] = []
    n = 0
    for tok in ids:
        if tok == image_token_id:
            if n >= len(counts):
                raise PromptBoundaryError(
                    f"more image placeholders in the prompt than images ({len(counts)})"
                )
            out.extend([image_token_id] * counts[n])
            n += 1
        else:
            out.append(tok)
    if n != len(counts):
        raise PromptBoundaryError(f"{n} image placeholders in the prompt for {len(counts)} images")
    return out


# -- the template of a cached-prefix backend ------------------------------------------------------


@dataclass(frozen=True)
class PrefixPrompt:
    """The [system + frames] prompt a prefix state was built from; every backend's prefix data
    carries it as ``prompt`` (:class:`PromptBackend` reads it back for reuse and questions)."""

    frames: tuple[Frame, ...]  # the contract's frame set the prefix was rendered from
    text: str  # the rendered prefix text
    text_ids: tuple[int, ...]  # the tokenised prefix text, image placeholders unexpanded
    ids: tuple[int, ...]  # image placeholders expanded to each keyframe's visual tokens


class TokenStream:
    """Answer tokens as they are decoded: when the first and the last arrived and, with a callback,
    their text through the incremental detokeniser every backend shares
    (:class:`egovlm.processing.TextStream`). Follows transformers' streamer protocol (``put``,
    ``end``); ``skip_prompt``: the first ``put`` is the prompt, as ``generate`` sends it."""

    def __init__(self, tokenizer: Any, on_text: TokenCallback | None, skip_prompt: bool = False) -> None:
        self.text = TextStream(tokenizer, on_text) if on_text is not None else None
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self._skip = skip_prompt

    def put(self, value: Any) -> None:
        """New token ids: a list, or a tensor of one sequence's (generate's)."""
        if self._skip:
            self._skip = False
            return
        now = time.perf_counter()
        self.first_token_at = self.first_token_at or now
        self.last_token_at = now
        if self.text is not None:
            if getattr(value, "ndim", 1) > 1 and value.shape[0] > 1:
                raise BackendError("streaming supports one sequence at a time")
            self.text.put(value.reshape(-1).tolist() if hasattr(value, "reshape") else list(value))

    def end(self) -> None:
        if self.text is not None:
            self.text.end()


class PromptBackend(Backend):
    """A backend that follows the contract's prompt with a cached [system + frames] prefix.

    The template does what every such backend does the same way: check the keyframes, render and
    tokenise the prefix (:class:`PrefixPrompt`), find how much of the previous state a new
    snapshot shares, and render, check and split a question's prompt against the cached prefix.
    A subclass sets ``processor`` (``apply_chat_template``), ``tokenizer``, ``image_token_id`` and
    ``vision_end_id``, and fills in the arithmetic: :meth:`_prefill` and :meth:`_generate_after`
    (and :meth:`encode_keyframe`, :meth:`generate_from_scratch`). Its prefix data has the prompt
    as ``data.prompt``."""

    supports_prefix_reuse = True
    processor: Any
    tokenizer: Any
    image_token_id: int
    vision_end_id: int

    def build_prefix(
        self,
        version: int,
        keyframes: Sequence[Keyframe],
        features: Sequence[VisionFeatures],
        system_prompt: str = SYSTEM_PROMPT,
        previous: PrefixState | None = None,
    ) -> PrefixState:
        """Prefill [system + frames]. With ``previous``, the KV of the leading keyframes both
        snapshots share is reused (causal attention: earlier tokens never depend on later ones),
        so appending a keyframe costs only its own tokens and evicting one costs the tokens
        after it."""
        t0 = time.perf_counter()
        if not keyframes:
            raise BackendError("cannot build a prefix without keyframes")
        if [f.keyframe_id for f in features] != [k.id for k in keyframes]:
            raise BackendError("vision features do not match the keyframes they are built with")
        frames = tuple(keyframe_frames(keyframes))
        rendered = render_prompt(
            self.processor.apply_chat_template, frames, PLACEHOLDER_QUESTION, None, system_prompt
        )
        prefix_text_ids = text_ids(self.tokenizer, rendered.prefix)
        ids = expand_image_tokens(prefix_text_ids, self.image_token_id, [f.n_tokens for f in features])
        prompt = PrefixPrompt(frames, rendered.prefix, tuple(prefix_text_ids), tuple(ids))
        shared, reused = self._reusable(previous, keyframes, system_prompt, prompt)
        data, reused = self._prefill(prompt, features, previous, shared, reused)
        return PrefixState(
            version=version,
            keyframe_ids=tuple(k.id for k in keyframes),
            system_prompt=system_prompt,
            n_tokens=len(prompt.ids),
            build_ms=(time.perf_counter() - t0) * 1000,
            data=data,
            reused_tokens=reused,
        )

    def _reusable(
        self,
        previous: PrefixState | None,
        keyframes: Sequence[Keyframe],
        system_prompt: str,
        prompt: PrefixPrompt,
    ) -> tuple[int, int]:
        """(keyframes shared, tokens reusable) with ``previous``: the leading keyframes both
        snapshots hold, up to the end of the last shared frame's newline, provided the token ids
        there are identical (else nothing is reused)."""
        if previous is None or previous.system_prompt != system_prompt:
            return 0, 0
        old: PrefixPrompt = previous.data.prompt
        shared = 0
        for a, b in zip(previous.keyframe_ids, keyframes, strict=False):
            if a != b.id:
                break
            shared += 1
        if shared == 0:
            return 0, 0
        ids = prompt.ids
        if shared == len(keyframes):  # all frames shared: the whole prefix
            n = len(ids)
        else:  # up to the shared frame's <|vision_end|> and its "\n"
            ends = [i for i, tok in enumerate(ids) if tok == self.vision_end_id]
            n = ends[shared - 1] + 2
        if n > len(old.ids) or old.ids[:n] != ids[:n]:
            return 0, 0
        return shared, n

    @abstractmethod
    def _prefill(
        self,
        prompt: PrefixPrompt,
        features: Sequence[VisionFeatures],
        previous: PrefixState | None,
        shared: int,
        reused: int,
    ) -> tuple[Any, int]:
        """The prefix data (with ``prompt`` as its ``prompt``) and the tokens actually reused:
        ``reused`` tokens (``shared`` keyframes) of ``previous`` may be taken over, the rest is
        prefilled from the cached vision features."""

    def generate(
        self,
        prefix: PrefixState,
        question: str,
        options: Mapping[str, str] | None,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
    ) -> Generation:
        t0 = time.perf_counter()
        cached: PrefixPrompt = prefix.data.prompt
        prompt = render_prompt(
            self.processor.apply_chat_template, cached.frames, question, options, prefix.system_prompt
        )
        if prompt.prefix != cached.text:
            raise PromptBoundaryError("the question's prompt does not start with the cached prefix text")
        suffix = split_ids(self.tokenizer, prompt, cached.text_ids)
        choice = answer_rule(self.tokenizer, options, params)
        return self._generate_after(prefix, suffix, t0, params, on_text, choice)

    @abstractmethod
    def _generate_after(
        self,
        prefix: PrefixState,
        suffix: list[int],
        t0: float,
        params: GenerationParams,
        on_text: TokenCallback | None,
        choice: AnswerChoice | None,
    ) -> Generation:
        """Prefill the question's ``suffix`` ids on top of ``prefix``, then decode (``t0``: when
        the question arrived, for ``prepare_ms``; ``choice``: the options' answer rule, or None)."""
