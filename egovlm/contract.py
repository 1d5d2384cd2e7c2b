"""The frames → prompt → answer contract shared by train/, eval, export/ and edge/.

Prompt: a system message, then ONE user message whose content is the frames first, each as
``Frame 3 (t=12.4 s): <image>``, then the question and lettered options. Frames come first so
that the token prefix [system + frames] does not depend on the question: the edge runtime
caches it and a question only pays for its own tokens.

Answer (R1-Zero style)::

    <think>…</think>
    <keyframes>2, 5</keyframes>
    <answer>C</answer>

:func:`parse_answer` is the one parser used by rewards, eval and edge: tolerant of whitespace
and tag case, strict about the letter set. Bump :data:`CONTRACT_VERSION` whenever the prompt
rendering or the answer grammar changes; export manifests record it and the runtime refuses a
mismatch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from egovlm.frames import Frame

CONTRACT_VERSION = 1

SYSTEM_PROMPT = (
    "You watch keyframes from a head-mounted camera and answer a multiple-choice question. "
    "Think inside <think></think>, cite the frame numbers your answer rests on inside "
    "<keyframes></keyframes>, then give the option letter inside <answer></answer>."
)

Message = dict[str, Any]

# The question turn: every token the prompt adds after the cached [system + frames] prefix (the question,
# its options, the end of the user turn and the assistant header). The ONE limit on questions: the edge
# runtime refuses a longer one before running the model (:class:`QuestionTooLongError`, HTTP 422), and
# TensorRT profiles and memory fit checks are sized for it (egovlm.export.fit). 4,000 characters of
# English are about 1,000 tokens; a spoken or typed question with five options is well under 256.
MAX_QUESTION_TOKENS = 256


class QuestionTooLongError(ValueError):
    """A question turn longer than :data:`MAX_QUESTION_TOKENS`; the message says by how much."""

    def __init__(self, tokens: int, limit: int = MAX_QUESTION_TOKENS) -> None:
        self.tokens, self.limit = tokens, limit
        super().__init__(
            f"the question (with its options and the chat scaffolding) is {tokens} tokens; the limit is "
            f"{limit} tokens (egovlm.contract.MAX_QUESTION_TOKENS): shorten the question or its options"
        )


def check_question_tokens(tokens: int, limit: int = MAX_QUESTION_TOKENS) -> None:
    """Raise :class:`QuestionTooLongError` when a question turn of ``tokens`` exceeds ``limit``."""
    if tokens > limit:
        raise QuestionTooLongError(tokens, limit)


def frame_label(frame: Frame) -> str:
    return f"Frame {frame.index} (t={frame.timestamp_s:.1f} s): "


def question_text(question: str, options: Mapping[str, str] | None = None) -> str:
    """The question block. Without options (an open question asked on the device) the model
    answers in free text inside ``<answer>``; with options it answers with a letter."""
    lines = [f"Question: {question.strip()}"]
    if options:
        lines.append("Options:")
        lines += [f"{letter}. {text.strip()}" for letter, text in options.items()]
    return "\n".join(lines)


def frame_content(frames: Sequence[Frame]) -> list[dict[str, Any]]:
    """The user-content items for the frames: label text, image placeholder, newline."""
    content: list[dict[str, Any]] = []
    for frame in frames:
        content.append({"type": "text", "text": frame_label(frame)})
        content.append({"type": "image"})
        content.append({"type": "text", "text": "\n"})
    return content


def build_messages(
    frames: Sequence[Frame],
    question: str,
    options: Mapping[str, str] | None = None,
    system_prompt: str = SYSTEM_PROMPT,
) -> list[Message]:
    """Chat messages for a frame set and a question. Images are placeholders, in frame order;
    pass ``[f.pil() for f in frames]`` as the processor's (or TRL's) ``images``."""
    if not frames:
        raise ValueError("a prompt needs at least one frame")
    indices = [f.index for f in frames]
    if indices != list(range(1, len(frames) + 1)):
        raise ValueError(f"frame indices must be 1..N in order, got {indices}")
    user = [*frame_content(frames), {"type": "text", "text": question_text(question, options)}]
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": user},
    ]


def format_answer(think: str, keyframes: Sequence[int], letter: str) -> str:
    """Render an answer in the contract's grammar (used by tests, demos and descriptions)."""
    cited = ", ".join(str(k) for k in keyframes)
    return f"<think>{think}</think>\n<keyframes>{cited}</keyframes>\n<answer>{letter}</answer>"


_TAG = r"<\s*{0}\s*>(.*?)<\s*/\s*{0}\s*>"
_THINK = re.compile(_TAG.format("think"), re.IGNORECASE | re.DOTALL)
_KEYFRAMES = re.compile(_TAG.format("keyframes"), re.IGNORECASE | re.DOTALL)
_ANSWER = re.compile(_TAG.format("answer"), re.IGNORECASE | re.DOTALL)
_FULL = re.compile(
    r"^\s*"
    + _TAG.format("think")
    + r"\s*"
    + _TAG.format("keyframes")
    + r"\s*"
    + _TAG.format("answer")
    + r"\s*$",
    re.IGNORECASE | re.DOTALL,
)
_INT_LIST = re.compile(r"^\s*(\d+\s*(,\s*\d+\s*)*)?$")


@dataclass
class ParsedAnswer:
    """What a completion says. ``format_ok`` is True only for the exact grammar, in order,
    with nothing outside the three blocks, a valid integer list and a letter from the set."""

    think: str | None = None
    keyframes: list[int] | None = None
    answer: str | None = None
    format_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def parts_ok(self) -> int:
        """How many of the three blocks are present and valid (for partial format credit)."""
        return sum(x is not None for x in (self.think, self.keyframes, self.answer))


def parse_answer(text: str, letters: str | None = "ABCDE") -> ParsedAnswer:
    """Parse a completion. Each block is read wherever it stands (so partial credit and
    best-effort answers work); ``format_ok`` additionally requires the exact grammar.

    ``letters`` is the option set of a multiple-choice question; ``None`` for an open
    question, whose answer is the block's non-empty free text."""
    out = ParsedAnswer()
    if (m := _THINK.search(text)) is not None:
        out.think = m.group(1).strip()
    else:
        out.problems.append("missing <think> block")

    if (m := _KEYFRAMES.search(text)) is not None:
        body = m.group(1)
        if _INT_LIST.match(body):
            out.keyframes = sorted({int(x) for x in re.findall(r"\d+", body)})
        else:
            out.problems.append(f"<keyframes> is not a comma-separated list of integers: {body.strip()!r}")
    else:
        out.problems.append("missing <keyframes> block")

    if (m := _ANSWER.search(text)) is not None:
        out.answer, problem = _read_answer(m.group(1), letters)
        if problem:
            out.problems.append(problem)
    else:
        out.problems.append("missing <answer> block")

    out.format_ok = not out.problems and _FULL.match(text) is not None
    if not out.problems and not out.format_ok:
        out.problems.append("blocks out of order or text outside them")
    return out


def _read_answer(body: str, letters: str | None) -> tuple[str | None, str | None]:
    """The ``<answer>`` body as (answer, problem): a letter of ``letters``, or free text if None."""
    value = body.strip()
    if letters is None:
        return (value, None) if value else (None, "<answer> is empty")
    if len(value) == 1 and value.upper() in letters.upper():
        return value.upper(), None
    return None, f"<answer> must be one letter of {letters}, got {value!r}"
