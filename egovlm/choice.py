"""Answers restricted to the offered options: constrained decoding of the ``<answer>`` block.

A multiple-choice question's ``<answer>`` may hold only what :func:`egovlm.contract.parse_answer`
reads as an option: one option's text or its letter. Once the model has written ``<answer>``, each
next token must continue one of those bodies up to ``</answer>``; everything before (think,
keyframes) and open questions stay free. Which option is still the model's choice (its own
distribution over the allowed tokens, greedy or sampled); what it can no longer do is write words
that are no option, which a small model does for most sentence-long options and which a user of
the device can do nothing with. The same rule runs in eval, in GRPO rollouts and on the device
(docs/architecture.md, "The contract").

:class:`AnswerChoice` is the rule for one question as token ids (a backend's own decode loop asks
:meth:`AnswerChoice.allowed`); :class:`AnswerChoiceProcessor` applies it inside
``transformers.generate``. Written here rather than with transformers' ``prefix_allowed_tokens_fn``:
that hook needs the full vocabulary listed for every unconstrained step of every row (151k ids
per token for Qwen2.5-VL), and most steps of a completion are unconstrained.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np

from egovlm.contract import normalize_answer

# options: a multiple-choice answer is one of the options (this module's rule); free: whatever the
# model writes. The one list eval (--answers), GRPO (rollouts.answers) and the device
# (GenerationParams.answers) choose from.
AnswerRule = Literal["options", "free"]
ANSWER_RULES: tuple[AnswerRule, ...] = get_args(AnswerRule)

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)  # candidates only; normalize_answer judges


def answer_bodies(options: Mapping[str, str]) -> list[str]:
    """What ``<answer>`` may hold for these options: each option's text in the surface forms
    :func:`egovlm.contract.parse_answer` maps to that option alone, then each letter. A sentence
    (ending in a period) as written and without the period; a phrase as written, without its
    leading article and with "the"/"The" in its place (``"a red cup"`` allows ``"the red cup"``,
    a model's habit the grammar accepts). The forms are only candidates: each must normalise
    (:func:`egovlm.contract.normalize_answer`) to its option's text and to no other's."""
    keys = [normalize_answer(text) for text in options.values()]
    bodies: list[str] = []
    for text, key in zip(options.values(), keys, strict=True):
        if not key or keys.count(key) > 1:  # the text of several options is no answer
            continue
        text = text.strip()
        if text.endswith("."):
            forms = [text, text.removesuffix(".").rstrip()]
        else:
            bare = _ARTICLE.sub("", text, count=1)
            forms = [text, bare, f"the {bare}", f"The {bare}"]
        for form in forms:
            is_letter = len(form) == 1 and form.upper() in (k.upper() for k in options)
            if form not in bodies and not is_letter and normalize_answer(form) == key:
                bodies.append(form)
    return [*bodies, *options]


class AnswerChoice:
    """One multiple-choice question's allowed ``<answer>`` bodies as token sequences.

    Each body is tokenised in place, as the model writes it after ``<answer>`` and followed by
    ``</answer>`` (so a tokeniser that merges across the tag boundary is followed, not fought)."""

    def __init__(self, tokenizer: Any, options: Mapping[str, str]) -> None:
        if not options:
            raise ValueError("an answer choice needs the question's options (an open question has none)")
        self.marker: list[int] = token_ids(tokenizer, ANSWER_OPEN)
        if not self.marker:
            raise ValueError(f"the tokenizer turns {ANSWER_OPEN!r} into no tokens")
        self.sequences: list[list[int]] = []
        for body in answer_bodies(options):
            ids = token_ids(tokenizer, ANSWER_OPEN + body + ANSWER_CLOSE)
            if ids[: len(self.marker)] == self.marker:
                ids = ids[len(self.marker) :]
            else:  # the tag merged with the body's first characters: tokenise the body alone
                ids = token_ids(tokenizer, body + ANSWER_CLOSE)
            if ids and ids not in self.sequences:
                self.sequences.append(ids)

    def allowed(self, generated: Sequence[int]) -> list[int] | None:
        """The token ids that may come next after ``generated`` (the completion so far, prompt
        excluded); None when the answer block is not open or an allowed body is complete."""
        start = after_last(generated, self.marker)
        if start is None:
            return None
        written = list(generated[start:])
        n = len(written)
        if any(n >= len(s) and written[: len(s)] == s for s in self.sequences):
            return None
        nxt = sorted({s[n] for s in self.sequences if len(s) > n and s[:n] == written})
        return nxt or None  # a body the rule cannot continue (written before it applied): leave it

    def restrict(self, generated: Sequence[int], logits: np.ndarray) -> np.ndarray:
        """``logits`` (one row, numpy) with every token :meth:`allowed` does not allow at -inf: for
        decode loops outside transformers (the device's ONNX / TensorRT backends)."""
        allowed = self.allowed(generated)
        if allowed is None:
            return logits
        out = np.full_like(logits, -np.inf)
        out[allowed] = logits[allowed]
        return out


class AnswerChoiceProcessor:
    """A ``transformers`` logits processor applying one :class:`AnswerChoice` per prompt.

    ``choices[i]`` is prompt ``i``'s rule (None: free, e.g. an open question); generated rows are
    ``len(choices) * num_return_sequences`` in prompt order, as ``generate`` expands them;
    ``prompt_len`` is the (padded) prompt length, where the completion starts (None: the length
    seen at the first call, which ``generate`` makes before the first new token)."""

    def __init__(
        self,
        choices: Sequence[AnswerChoice | None],
        prompt_len: int | None = None,
        num_return_sequences: int = 1,
    ) -> None:
        self.choices = list(choices)
        self.prompt_len = prompt_len
        self.n = num_return_sequences

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if input_ids.shape[0] != len(self.choices) * self.n:
            raise ValueError(
                f"{input_ids.shape[0]} rows generated for {len(self.choices)} prompts x {self.n} sequences"
            )
        if self.prompt_len is None:
            self.prompt_len = int(input_ids.shape[1])
        for row in range(input_ids.shape[0]):
            choice = self.choices[row // self.n]
            if choice is None:
                continue
            allowed = choice.allowed(input_ids[row, self.prompt_len :].tolist())
            if allowed is None:
                continue
            keep = torch.tensor(allowed, device=scores.device)
            masked = torch.full_like(scores[row], float("-inf"))
            masked[keep] = scores[row, keep]
            scores[row] = masked
        return scores


def choices_for(tokenizer: Any, options: Sequence[Mapping[str, str] | None]) -> list[AnswerChoice | None]:
    """One rule per prompt: :class:`AnswerChoice` for a multiple-choice question, None for an open one."""
    return [AnswerChoice(tokenizer, o) if o else None for o in options]


def token_ids(tokenizer: Any, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def after_last(seq: Sequence[int], marker: list[int]) -> int | None:
    """The index just past the last occurrence of ``marker`` in ``seq``, or None."""
    m = len(marker)
    for i in range(len(seq) - m, -1, -1):
        if list(seq[i : i + m]) == marker:
            return i + m
    return None
