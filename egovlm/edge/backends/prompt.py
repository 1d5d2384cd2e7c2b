"""Split the contract's prompt into a cacheable prefix and a per-question suffix, as token ids.

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from egovlm.contract import build_messages, check_question_tokens, question_text
from egovlm.frames import Frame

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
