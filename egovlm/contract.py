"""The frames → prompt → answer contract shared by train, eval, export and edge stages.

Prompt: a system message, then ONE user message whose content is the frames first, each as
``Frame 3 (t=12.4 s): <image>``, then the question and, for a multiple-choice question, its
lettered options. Frames come first so that the token prefix [system + frames] does not depend
on the question: the edge runtime caches it and a question only pays for its own tokens.

Answer (R1-Zero style)::

    <think>…</think>
    <keyframes>2, 5</keyframes>
    <answer>C</answer>

The ``<answer>`` body of a multiple-choice question is an option letter or one option's exact
text (``the yellow banana`` for ``C. the yellow banana``; the parser maps it to ``C``); of an
open question (no options), a short answer in words. Words are compared by
:func:`answers_match`: exact after :func:`normalize_answer`, never fuzzy.

:func:`parse_answer` is the one parser used by rewards, eval and edge: tolerant of whitespace
and tag case, strict about the letter set. Evaluation also has a *plain* prompt, the letter-only
one published EgoSchema numbers are measured with (:func:`build_plain_messages`), and its parser
:func:`parse_letter`; neither is used in training or on the device. Bump
:data:`CONTRACT_VERSION` whenever the prompt rendering or the answer grammar changes; export
manifests record it and the onnx and tensorrt backends refuse a mismatch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from egovlm.frames import Frame

# 2: the system prompt asks for words when a question has no options; an option's text counts as its letter.
CONTRACT_VERSION = 2

SYSTEM_PROMPT = (
    "You watch keyframes from a head-mounted camera and answer a question. "
    "Think inside <think></think>, cite the frame numbers your answer rests on inside "
    "<keyframes></keyframes>, then give the option letter, or for a question without options "
    "a short answer in words, inside <answer></answer>."
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


def format_answer(think: str, keyframes: Sequence[int], answer: str) -> str:
    """Render an answer (a letter, an option's text or words) in the contract's grammar (used by
    tests, demos, training targets and descriptions)."""
    cited = ", ".join(str(k) for k in keyframes)
    return f"<think>{think}</think>\n<keyframes>{cited}</keyframes>\n<answer>{answer}</answer>"


_ARTICLE = re.compile(r"^(?:the|a|an)\s+")


def normalize_answer(text: str) -> str:
    """The comparable form of an answer in words: lowercase, surrounding whitespace and trailing
    periods dropped, inner whitespace collapsed to one space, one leading article (the, a, an)
    dropped. ``" The  Yellow banana. "`` → ``"yellow banana"``; a lone ``"A"`` stays ``"a"``."""
    value = " ".join(text.lower().split()).rstrip(".").rstrip()
    return _ARTICLE.sub("", value, count=1)


def answers_match(predicted: str | None, truth: str | None) -> bool:
    """Whether a parsed answer equals the ground truth: exact after :func:`normalize_answer` (an
    option letter matches only itself; words match words without fuzzy matching). None or an
    answer that normalises to nothing never matches."""
    if predicted is None or truth is None:
        return False
    p = normalize_answer(predicted)
    return bool(p) and p == normalize_answer(truth)


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
    with nothing outside the three blocks, a valid integer list and a valid answer.

    ``answer``: for a multiple-choice question the option letter (also when the model wrote the
    option's text), for an open question the words. ``answer_text``: the ``<answer>`` body as
    written (stripped; None without the block or with an empty one)."""

    think: str | None = None
    keyframes: list[int] | None = None
    answer: str | None = None
    answer_text: str | None = None
    format_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def parts_ok(self) -> int:
        """How many of the three blocks are present and valid (for partial format credit)."""
        return sum(x is not None for x in (self.think, self.keyframes, self.answer))


def parse_answer(
    text: str, letters: str | None = "ABCDE", options: Mapping[str, str] | None = None
) -> ParsedAnswer:
    """Parse a completion. Each block is read wherever it stands (so partial credit and
    best-effort answers work); ``format_ok`` additionally requires the exact grammar.

    ``letters`` is the option set of a multiple-choice question; ``None`` (with no ``options``)
    for an open question, whose answer is the block's non-empty text. ``options`` are the
    question's option texts: with them an answer that equals exactly one option's text after
    :func:`normalize_answer` is that option's letter (equal to several: no answer); their keys
    are the letter set when ``letters`` is None."""
    if options and letters is None:
        letters = "".join(options)
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
        out.answer_text = m.group(1).strip() or None
        out.answer, problem = _read_answer(m.group(1), letters, options)
        if problem:
            out.problems.append(problem)
    else:
        out.problems.append("missing <answer> block")

    out.format_ok = not out.problems and _FULL.match(text) is not None
    if not out.problems and not out.format_ok:
        out.problems.append("blocks out of order or text outside them")
    return out


def _read_answer(
    body: str, letters: str | None, options: Mapping[str, str] | None
) -> tuple[str | None, str | None]:
    """The ``<answer>`` body as (answer, problem): a letter of ``letters`` or the letter of the one
    option whose text it is; the body's words when ``letters`` is None."""
    value = body.strip()
    if letters is None:
        return (value, None) if value else (None, "<answer> is empty")
    if len(value) == 1 and value.upper() in letters.upper():
        return value.upper(), None
    if not options:
        return None, f"<answer> must be one letter of {letters}, got {value!r}"
    said = normalize_answer(value)
    hits = [k for k, v in options.items() if k.upper() in letters.upper() and normalize_answer(v) == said]
    if len(hits) == 1 and said:
        return hits[0].upper(), None
    if len(hits) > 1:
        return None, f"<answer> {value!r} is the text of several options ({', '.join(hits)})"
    return None, f"<answer> must be one letter of {letters} or one option's text, got {value!r}"


# The plain prompt: how published EgoSchema numbers for Qwen2.5-VL are measured. lmms-eval's EgoSchema
# task (lmms_eval/tasks/egoschema/utils.py, egoschema_doc_to_text) sends the visuals, then the question,
# each option on its own line as "A. text", then "\nAnswer with the option's letter from the given
# choices directly."; its Qwen2.5-VL wrapper (lmms_eval/models/qwen2_5_vl.py) puts the visuals first in
# the user turn under a "You are a helpful assistant." system message; greedy, max_new_tokens 16
# (lmms_eval/tasks/egoschema/_default_template_yaml). One difference stays: lmms-eval passes the clip as a
# video, we pass the same N frames as images (the path our training and the edge runtime use).
PLAIN_SYSTEM_PROMPT = "You are a helpful assistant."
PLAIN_INSTRUCTION = "Answer with the option's letter from the given choices directly."
PLAIN_MAX_NEW_TOKENS = 16


def plain_question_text(question: str, options: Mapping[str, str]) -> str:
    """The plain prompt's text: question, ``L. option`` lines, the letter-only instruction."""
    lines = [question.strip(), *(f"{letter}. {text.strip()}" for letter, text in options.items())]
    return "\n".join([*lines, PLAIN_INSTRUCTION])


def build_plain_messages(frames: Sequence[Frame], question: str, options: Mapping[str, str]) -> list[Message]:
    """Chat messages for the plain letter-only prompt (see :data:`PLAIN_INSTRUCTION`): the frames as
    bare images (no labels), then :func:`plain_question_text`. Multiple-choice questions only."""
    if not frames:
        raise ValueError("a prompt needs at least one frame")
    if not options:
        raise ValueError("the plain prompt asks for an option letter: the question needs options")
    images: list[dict[str, Any]] = [{"type": "image"} for _ in frames]
    return [
        {"role": "system", "content": [{"type": "text", "text": PLAIN_SYSTEM_PROMPT}]},
        {
            "role": "user",
            "content": [*images, {"type": "text", "text": plain_question_text(question, options)}],
        },
    ]


# A whole answer that is one letter, allowing wrapping ("(B)", "**B**", "'B'") and a trailing period.
_BARE = re.compile(r"^[\s*_`'\"(\[]*([A-Za-z])[\s*_`'\")\]]*[.!]?[\s*_`'\"]*$")
# An answer that starts with an option label: "B.", "B. the keys", "(B) the keys", "B) keys", "B: keys".
_LABEL = re.compile(r"^[\s*_`'\"]*(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])[.):\]])")
# An explicit statement anywhere: "Answer: B", "The answer is (C).", "option D" — the letter must be
# followed by punctuation or the end ("Answer: A person ..." is a sentence, not a letter).
_STATED = re.compile(
    r"(?i:\b(?:answer|option|choice)\b)\s*(?i:is)?\s*[:\-]?\s*[*_`'\"]*[(\[]?([A-Z])(?=[)\].,;:!*_`'\"]|\s*$)"
)


def parse_letter(text: str, letters: str = "ABCDE") -> str | None:
    """The option letter of a plain-prompt completion (:func:`build_plain_messages`), or None.

    The plain prompt's counterpart of :func:`parse_answer`, for letter-only answers. Accepted, in this
    order: the whole completion is one letter ("B", "b", "B.", "(B)", "**B**"); it starts with an option
    label ("B. the keys", "(B) the keys", "B) keys"); it states the letter ("Answer: B", "The answer is
    (C)."). A letter outside ``letters`` is not an answer. More lenient than lmms-eval's exact match
    (which takes "B" or "B." only), so a model that wraps its letter is not scored as wrong."""
    allowed = letters.upper()
    if (m := _BARE.match(text)) is not None:
        letter = m.group(1).upper()
        return letter if letter in allowed else None
    if (m := _LABEL.match(text)) is not None:
        letter = next(g for g in m.groups() if g)
        return letter if letter in allowed else None
    for m in _STATED.finditer(text):
        if m.group(1) in allowed:
            return m.group(1)
    return None
