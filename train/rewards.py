"""GRPO rewards: plain callables with TRL's reward-function signature.

Each reward is called as ``reward(prompts=..., completions=..., completion_ids=..., **columns)``
where ``columns`` are the training dataset's columns (one value per completion) and returns one
float per completion, or ``None`` where the reward does not apply (TRL then leaves it out of
that completion's weighted sum and out of the logged mean). The weights live in the recipe
(``rewards.weights``) and reach TRL as ``GRPOConfig.reward_weights``.

Definitions (this project's; the paper's exact formulas are not published):

* **format** — 1.0 when the completion is exactly ``<think>…</think> <keyframes>i, j</keyframes>
  <answer>L</answer>`` (:func:`egovlm.contract.parse_answer` ``format_ok``). Otherwise partial
  credit ``format_partial × (s × tags / 6 + (1 - s) × blocks / 3)`` with ``s`` =
  ``format_tag_share`` (0.5 by default), where ``tags`` counts which of the six tags
  (``<think>``, ``</think>``, ``<keyframes>``, …) occur at least once and ``blocks`` how many of
  the three blocks parse validly. So three valid blocks out of order or wrapped in extra text get
  ``format_partial`` (0.5 by default), stray tags get a little, empty text gets 0; repeating a tag
  pays nothing more. The tag term gives a model that has never seen the grammar (the R1-Zero
  start; the offline tiny models) a gradient toward it; it can also be farmed by "tag soup"
  (every tag, no content), which ``format_tag_share: 0`` rules out (docs/mini_experiment).
* **accuracy** — 1.0 when the parsed ``<answer>`` letter equals the ground-truth letter, else 0.
  The letter is read wherever the block stands (format is paid separately). Rows without a
  public answer get ``None``.
* **keyframe** — F1 between the cited frame indices and the *salient set*: the prompt's frames
  whose timestamps lie within ``keyframe_tolerance_s`` of the dataset's ``salient_times``
  (``None``: each salient time maps to its nearest frame). Rows without temporal annotations use
  the keyframe selector's picks among the prompt frames (column ``selector_frames``, filled at
  dataset preparation); rows with neither get ``None``. Citing nothing, or no parsable
  ``<keyframes>`` block, scores 0. With ``keyframe_requires_correct`` the F1 is paid only when
  the answer is correct. The recipe validator keeps ``weights.keyframe <= weights.accuracy``, so
  the keyframe reward (at most 1) can never pay more than a correct answer.
* **length** (optional; weight 0 disables it) — DAPO's soft overlong penalty on the completion's
  token count L: 0 while L <= max - buffer, then linearly down to -1 at L = max, -1 beyond.

The format reward also logs ``format_failure_rate`` (share of completions that are not exactly
in the grammar) through TRL's ``log_metric`` hook.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from egovlm.contract import ParsedAnswer, parse_answer

RewardFn = Callable[..., list[float | None]]


def completion_text(completion: Any) -> str:
    """The generated text, whether TRL passes a string or a conversational completion
    (``[{"role": "assistant", "content": str | [parts]}]``)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else ""
        if isinstance(content, list):
            return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        return str(content or "")
    return ""


def _letters(options_letters: str | None) -> str:
    return options_letters or "ABCDE"


def _parsed(completions: Sequence[Any], letters: Sequence[str | None] | None) -> list[ParsedAnswer]:
    sets = letters if letters is not None else [None] * len(completions)
    return [parse_answer(completion_text(c), _letters(ls)) for c, ls in zip(completions, sets, strict=True)]


TAGS = ("<think>", "</think>", "<keyframes>", "</keyframes>", "<answer>", "</answer>")
_TAG_RE = re.compile(r"<\s*(/?)\s*(think|keyframes|answer)\s*>", re.IGNORECASE)


def tags_present(text: str) -> int:
    """How many of the six grammar tags occur at least once (tolerant of case and spaces, like the parser)."""
    return len({(m.group(1), m.group(2).lower()) for m in _TAG_RE.finditer(text)})


def format_score(text: str, parsed: ParsedAnswer, partial: float, tag_share: float = 0.5) -> float:
    if parsed.format_ok:
        return 1.0
    tags = tags_present(text) / len(TAGS)
    return partial * (tag_share * tags + (1.0 - tag_share) * parsed.parts_ok / 3.0)


def f1(cited: Sequence[int], salient: Sequence[int]) -> float:
    """F1 between two sets of frame indices; 0 when nothing is cited."""
    c, s = set(cited), set(salient)
    if not c or not s:
        return 0.0
    hit = len(c & s)
    return 2.0 * hit / (len(c) + len(s))


def salient_frame_indices(
    frame_times: Sequence[float], salient_times: Sequence[float] | None, tolerance_s: float | None
) -> list[int]:
    """1-based indices of the prompt frames that show an annotated moment.

    With a tolerance: every frame within ``tolerance_s`` of some salient time (a moment with
    no frame that close is not visible in this frame set and adds nothing). Without one: for
    each salient time, its nearest frame(s) (ties keep both)."""
    if not frame_times or not salient_times:
        return []
    out: set[int] = set()
    for s in salient_times:
        dists = [abs(t - s) for t in frame_times]
        if tolerance_s is None:
            best = min(dists)
            out.update(i + 1 for i, d in enumerate(dists) if d - best <= 1e-9)
        else:
            out.update(i + 1 for i, d in enumerate(dists) if d <= tolerance_s + 1e-9)
    return sorted(out)


def salient_set(
    frame_times: Sequence[float],
    salient_times: Sequence[float] | None,
    selector_frames: Sequence[int] | None,
    tolerance_s: float | None,
) -> list[int]:
    """The salient set of one row: annotations when present, else the selector's frames."""
    if salient_times:
        return salient_frame_indices(frame_times, salient_times, tolerance_s)
    return sorted(set(selector_frames or []))


def soft_overlong(length: int, max_tokens: int, buffer: int) -> float:
    """DAPO's soft overlong punishment: 0, then a linear ramp to -1 over the last ``buffer`` tokens."""
    start = max_tokens - buffer
    if length <= start:
        return 0.0
    if length > max_tokens:
        return -1.0
    return (start - length) / buffer


class FormatReward:
    """1 for the exact answer grammar, documented partial credit otherwise (module docstring)."""

    __name__ = "format"

    def __init__(self, partial: float = 0.5, tag_share: float = 0.5) -> None:
        self.partial = partial
        self.tag_share = tag_share

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        parsed = _parsed(completions, columns.get("letters"))
        log_metric = columns.get("log_metric")
        if log_metric is not None and parsed:
            log_metric("format_failure_rate", sum(not p.format_ok for p in parsed) / len(parsed))
        return [format_score(t, p, self.partial, self.tag_share) for t, p in zip(texts, parsed, strict=True)]


class AccuracyReward:
    """1 when the answer letter equals the ground truth (column ``answer``), else 0."""

    __name__ = "accuracy"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        truths = columns.get("answer") or [None] * len(completions)
        parsed = _parsed(completions, columns.get("letters"))
        return [None if t is None else float(p.answer == t) for p, t in zip(parsed, truths, strict=True)]


class KeyframeReward:
    """F1 of cited frames vs the salient set (columns ``frame_times``, ``salient_times``,
    ``selector_frames``; see :func:`salient_set`)."""

    __name__ = "keyframe"

    def __init__(self, tolerance_s: float | None = None, requires_correct: bool = False) -> None:
        self.tolerance_s = tolerance_s
        self.requires_correct = requires_correct

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        n = len(completions)
        parsed = _parsed(completions, columns.get("letters"))
        frame_times = columns.get("frame_times") or [[]] * n
        salient_times = columns.get("salient_times") or [None] * n
        selector = columns.get("selector_frames") or [None] * n
        truths = columns.get("answer") or [None] * n
        out: list[float | None] = []
        for i, p in enumerate(parsed):
            target = salient_set(frame_times[i], salient_times[i], selector[i], self.tolerance_s)
            if not target:
                out.append(None)
            elif self.requires_correct and (truths[i] is None or p.answer != truths[i]):
                out.append(0.0)
            else:
                out.append(f1(p.keyframes or [], target))
        return out


class LengthReward:
    """Soft overlong penalty on the completion's token count (``completion_ids``), in [-1, 0]."""

    __name__ = "length"

    def __init__(self, max_tokens: int, buffer_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.buffer_tokens = buffer_tokens

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        ids = columns.get("completion_ids")
        lengths = [len(x) for x in ids] if ids is not None else [len(completion_text(c)) for c in completions]
        return [soft_overlong(n, self.max_tokens, self.buffer_tokens) for n in lengths]


def build_rewards(rewards_cfg: Any) -> tuple[list[RewardFn], list[float]]:
    """Reward callables and their weights from a recipe's ``rewards`` section (length only when weighted)."""
    w = rewards_cfg.weights
    funcs: list[RewardFn] = [
        FormatReward(rewards_cfg.format_partial, rewards_cfg.format_tag_share),
        AccuracyReward(),
        KeyframeReward(rewards_cfg.keyframe_tolerance_s, rewards_cfg.keyframe_requires_correct),
    ]
    weights = [w.format, w.accuracy, w.keyframe]
    if w.length > 0 and rewards_cfg.max_tokens is not None:
        funcs.append(LengthReward(rewards_cfg.max_tokens, rewards_cfg.length_buffer_tokens))
        weights.append(w.length)
    return funcs, weights
