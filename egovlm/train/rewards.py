"""GRPO rewards: plain callables with TRL's reward-function signature.

Each reward is called as ``reward(prompts=..., completions=..., completion_ids=..., **columns)``
where ``columns`` are the training dataset's columns (one value per completion) and returns one
float per completion, or ``None`` where the reward does not apply (TRL then leaves it out of
that completion's weighted sum and out of the logged mean). The weights live in the recipe
(``rewards.weights``) and reach TRL as ``GRPOConfig.reward_weights``.

Definitions (this project's; the paper's exact formulas are not published):

* **format** — 1.0 when the completion is exactly ``<think>…</think> <keyframes>i, j</keyframes>
  <answer>…</answer>`` with a valid answer (:func:`egovlm.contract.parse_answer` ``format_ok``: a
  letter or an option's text, words for an open question). Otherwise partial
  credit ``format_partial × (s × tags / 6 + (1 - s) × blocks / 3)`` with ``s`` =
  ``format_tag_share`` (0.5 by default), where ``tags`` counts which of the six tags
  (``<think>``, ``</think>``, ``<keyframes>``, …) occur at least once and ``blocks`` how many of
  the three blocks parse validly. So three valid blocks out of order or wrapped in extra text get
  ``format_partial`` (0.5 by default), stray tags get a little, empty text gets 0; repeating a tag
  pays nothing more. The tag term gives a model that has never seen the grammar (the R1-Zero
  start; the offline tiny models) a gradient toward it; it can also be farmed by "tag soup" (every
  tag, no content; docs/mini_experiment/LOG.md, run 1), which ``format_tag_share: 0`` rules out.
* **accuracy** — 1.0 when the parsed ``<answer>`` matches the ground truth, else 0
  (:func:`egovlm.contract.answers_match`). Multiple choice: the letters compare, and an answer
  written as one option's exact text counts as that option's letter (column ``option_texts``).
  Open question (column ``letters`` None): the words must equal the ground-truth words after
  :func:`egovlm.contract.normalize_answer`, no fuzzy matching. The answer is read wherever the
  block stands (format is paid separately). Rows without a public answer get ``None``.
* **keyframe** — how well the cited frame indices match the *salient set*, beyond what a policy
  that never looks at the frames would get. The salient set: the prompt's frames whose timestamps lie
  within ``keyframe_tolerance_s`` of the dataset's ``salient_times`` (``None``: each salient time
  maps to its nearest frame); rows without temporal annotations use the keyframe selector's picks
  among the prompt frames (column ``selector_frames``, filled at dataset preparation); rows with
  neither get ``None``. Citing nothing, or no parsable ``<keyframes>`` block, scores 0. Four knobs
  (recipe ``rewards.keyframe_*``; the defaults give plain F1):

  - ``keyframe_beta``: the match is F-beta, ``(1 + b²)·hits / (|cited| + b²·|salient|)``; ``b < 1``
    weights precision, so over-citing costs more than missing a frame (b = 1: F1).
  - ``keyframe_max_cited``: citing more frames than this scores 0 (None: no cap).
  - ``keyframe_requires_correct``: paid only when the answer is correct (else 0), by the accuracy
    reward's test, so the same for letters, option texts and open answers.
  - ``keyframe_prior``: what the score is measured against. ``none``: the F-beta itself. ``cite_all``
    and ``positional``: ``max(0, F - B) / (1 - B)`` where ``B`` is, *for this prompt*, the best F-beta
    any content-free strategy in a family achieves; ``None`` when ``B = 1`` (a content-free strategy
    already cites exactly the salient set, so looking cannot be measured on this prompt). The family
    for ``cite_all`` is {cite every frame}; for ``positional`` it is every prefix of the question
    type's *positional ranking* (:class:`PositionalPrior`): the frame positions ordered by how much
    citing that position alone would have earned on the training set, so the prefixes include the
    best fixed position (k = 1) and cite-all (k = N). Prefixes longer than ``keyframe_max_cited`` are
    left out (the cap already pays them 0). Any strategy in the family therefore earns exactly 0 on
    every prompt, and an exact citation earns 1 wherever the family falls short of it. A fixed
    citation *outside* the family still earns: on the miniature experiment's RL rows "always frame 7"
    for where-ended and "always frame 5" for last pick-up average 0.22 per correct answer (and GRPO
    learnt just such fixed citations; docs/mini_experiment/LOG.md).
    ``expected``: ``F(c) - E[F(c)]``, the citation's F-beta on this prompt minus the mean F-beta the
    *same citation* earns over the question type's training rows (:meth:`PositionalPrior.expected`).
    Every citation a policy that never looks can make, whatever it is, earns 0 on average over the
    type's training prompts (up to how salient times fall between frames: the reward maps each to its
    nearest frame, ties to both, the prior to one segment; 0.01-0.03 at most on the miniature's RL
    rows), so no fixed citation is worth converging to; a citation that follows the
    content earns up to ``1 - E``; one that misses what a guess would hit can earn below 0. Never
    ``None``; citing nothing, or more than the cap, scores 0 (what no citation is worth).

  Why ``positional`` takes a per-prompt maximum and not a constant: subtracting the family's
  *average* score would still pay a content-free policy on the prompts where its guess happens to be
  right (``max(0, ·)`` of a varying quantity has a positive mean); against the per-prompt maximum the
  family earns nothing anywhere. ``expected`` drops the ``max(0, ·)``: a signed reward whose mean
  is 0 for *every* content-free citation, not only the family's.
  Plain F1 pays a policy that never looks (on EgoSynth, per issue 22: cite all 8 frames ≈ 0.31, the
  best fixed frame per question type ≈ 0.43); ``tests/train/test_rewards.py`` rebuilds such a
  dataset and shows both earn ~0 here. The ranking is estimated once, lazily at the first call, from
  the JSONL in ``keyframe_prior_data`` (the recipe fills in ``data.train``; both ``positional`` and
  ``expected`` read it): every row with
  ``salient_times`` and a known clip span (``end_s`` or ``duration_s``, from ``start_s`` or 0) gives
  relative positions in the clip, mapped to frame positions as uniform sampling places them. It is a
  pure function of that file, so every rank of a distributed run computes the same reward. The
  recipe validator keeps ``weights.keyframe <= weights.accuracy``: citing frames never pays more
  than a correct answer.
* **length** (optional; weight 0 disables it) — DAPO's soft overlong penalty on the completion's
  token count L: 0 while L <= max - buffer, then linearly down to -1 at L = max, -1 beyond.

The format reward also logs ``format_failure_rate`` (share of completions that are not exactly
in the grammar) through TRL's ``log_metric`` hook.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from egovlm.contract import ParsedAnswer, answers_match, parse_answer
from egovlm.train.dataset import row_options

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


DEFAULT_LETTERS = "ABCDE"  # the option set when the dataset has no ``letters`` column


def _parsed(completions: Sequence[Any], columns: dict[str, Any]) -> list[ParsedAnswer]:
    """Parse each completion against its row's question: ``letters`` (None: open question; no
    column: :data:`DEFAULT_LETTERS`) and ``option_texts`` (so an option's text reads as its letter)."""
    n = len(completions)
    letters = columns["letters"] if columns.get("letters") is not None else [DEFAULT_LETTERS] * n
    texts = columns.get("option_texts") or [None] * n
    out = []
    for c, ls, ts in zip(completions, letters, texts, strict=True):
        out.append(parse_answer(completion_text(c), ls, row_options(ls, ts)))
    return out


def is_correct(parsed: ParsedAnswer, truth: str | None) -> bool:
    """The accuracy test shared by the accuracy and keyframe rewards (module docstring)."""
    return answers_match(parsed.answer, truth)


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


def f_beta(cited: Iterable[int], salient: Iterable[int], beta: float = 1.0) -> float:
    """F-beta between two sets of frame indices, ``(1 + b²)·hits / (|cited| + b²·|salient|)``;
    0 when nothing is cited. ``beta < 1`` weights precision (over-citing costs more)."""
    c, s = set(cited), set(salient)
    if not c or not s:
        return 0.0
    b2 = beta * beta
    return (1.0 + b2) * len(c & s) / (len(c) + b2 * len(s))


def f1(cited: Iterable[int], salient: Iterable[int]) -> float:
    """F1 between two sets of frame indices; 0 when nothing is cited."""
    return f_beta(cited, salient, 1.0)


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
        parsed = _parsed(completions, columns)
        log_metric = columns.get("log_metric")
        if log_metric is not None and parsed:
            log_metric("format_failure_rate", sum(not p.format_ok for p in parsed) / len(parsed))
        return [format_score(t, p, self.partial, self.tag_share) for t, p in zip(texts, parsed, strict=True)]


class AccuracyReward:
    """1 when the answer (letter, option text or open words) matches the ground truth (column
    ``answer``), else 0."""

    __name__ = "accuracy"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        truths = columns.get("answer") or [None] * len(completions)
        parsed = _parsed(completions, columns)
        return [None if t is None else float(is_correct(p, t)) for p, t in zip(parsed, truths, strict=True)]


KEYFRAME_PRIORS = ("none", "cite_all", "positional", "expected")
PRIORS_WITH_DATA = ("positional", "expected")  # estimated from a training JSONL (keyframe_prior_data)
UNTYPED = ""  # the ranking key of rows without a question_type


class PriorDataError(ValueError):
    """The positional prior cannot be estimated from the given file; the message says what to do."""


def position_of(u: float, n: int) -> int:
    """The 1-based frame position (of ``n`` uniformly sampled) nearest to relative time ``u`` in [0, 1]:
    uniform sampling puts frame p at the centre of segment p, so the nearest one is the segment's."""
    return min(n, max(1, math.floor(u * n) + 1))


class PositionalPrior:
    """Where annotated moments fall in a clip, per question type, from a training set.

    ``positions[question_type]`` holds, per annotated row, the relative times (0 = clip start, 1 =
    clip end) of its salient moments. :meth:`ranking` turns them into the frame positions 1..N a
    policy that never looks would cite, best first (module docstring)."""

    def __init__(self, positions: dict[str, list[list[float]]], source: str = "<memory>") -> None:
        self.positions = {k: v for k, v in positions.items() if v}
        self.source = source
        self._rankings: dict[tuple[str | None, int, float], list[int]] = {}
        self._expected: dict[tuple[str | None, int, float, frozenset[int]], float] = {}
        self._sets: dict[tuple[str | None, int], list[set[int]]] = {}

    @classmethod
    def from_items(cls, items: Iterable[Any], source: str = "<memory>") -> PositionalPrior:
        """From schema rows (egovlm.schema.QAItem): those with ``salient_times`` and a known span."""
        positions: dict[str, list[list[float]]] = defaultdict(list)
        for item in items:
            lo = getattr(item, "start_s", None) or 0.0
            hi = getattr(item, "end_s", None) or item.duration_s
            if not item.salient_times or hi is None or hi <= lo:
                continue
            rel = [min(1.0, max(0.0, (t - lo) / (hi - lo))) for t in item.salient_times]
            positions[item.question_type or UNTYPED].append(rel)
        if not positions:
            raise PriorDataError(
                f"{source}: no row has salient_times and a known clip span (end_s or duration_s), so the "
                "positional keyframe prior cannot be estimated; use rewards.keyframe_prior: cite_all, or "
                "point rewards.keyframe_prior_data at a JSONL that has them"
            )
        return cls(dict(positions), source)

    @classmethod
    def from_jsonl(cls, path: Path | str) -> PositionalPrior:
        from egovlm.schema import read_jsonl

        if not Path(path).is_file():
            raise PriorDataError(
                f"rewards.keyframe_prior_data: {path} not found (the positional keyframe prior is estimated "
                "from a training JSONL; by default the recipe's data.train)"
            )
        return cls.from_items(read_jsonl(path), str(path))

    def salient_sets(self, question_type: str | None, n: int) -> list[set[int]]:
        """This type's rows as salient sets of frame positions 1..n (all rows pooled for a type the
        training set lacks)."""
        qt = question_type or UNTYPED
        key = (qt if qt in self.positions else None, n)
        if key not in self._sets:
            rows = self.positions.get(qt) or [r for rs in self.positions.values() for r in rs]
            self._sets[key] = [{position_of(u, n) for u in rel} for rel in rows]
        return self._sets[key]

    def ranking(self, question_type: str | None, n: int, beta: float = 1.0) -> list[int]:
        """Positions 1..n, best first: by the mean F-beta citing that position alone earns on this
        type's rows (all rows pooled for a type the training set lacks); ties to the earlier frame."""
        qt = question_type or UNTYPED
        key = (qt if qt in self.positions else None, n, beta)
        if key not in self._rankings:
            sets = self.salient_sets(question_type, n)
            gain = [sum(f_beta([p], s, beta) for s in sets) / len(sets) for p in range(1, n + 1)]
            self._rankings[key] = sorted(range(1, n + 1), key=lambda p: (-gain[p - 1], p))
        return self._rankings[key]

    def expected(self, cited: Iterable[int], question_type: str | None, n: int, beta: float = 1.0) -> float:
        """The mean F-beta citing exactly ``cited`` earns on this type's rows: what that citation is
        worth to a policy that never looks."""
        qt = question_type or UNTYPED
        key = (qt if qt in self.positions else None, n, beta, frozenset(cited))
        if key not in self._expected:
            sets = self.salient_sets(question_type, n)
            self._expected[key] = sum(f_beta(key[3], s, beta) for s in sets) / len(sets)
        return self._expected[key]


class KeyframeReward:
    """Cited frames vs the salient set (columns ``frame_times``, ``salient_times``,
    ``selector_frames``, ``question_type``, ``answer``; see :func:`salient_set` and the module
    docstring for beta, the cap, the correctness gate and the content-free baseline)."""

    __name__ = "keyframe"

    def __init__(
        self,
        tolerance_s: float | None = None,
        requires_correct: bool = False,
        beta: float = 1.0,
        max_cited: int | None = None,
        prior: str = "none",
        prior_data: str | Path | PositionalPrior | None = None,
    ) -> None:
        if prior not in KEYFRAME_PRIORS:
            raise ValueError(f"keyframe prior must be one of {KEYFRAME_PRIORS}, got {prior!r}")
        if prior in PRIORS_WITH_DATA and prior_data is None:
            raise ValueError(f"the {prior} keyframe prior needs prior_data (a training JSONL)")
        self.tolerance_s = tolerance_s
        self.requires_correct = requires_correct
        self.beta = beta
        self.max_cited = max_cited
        self.prior = prior
        self._prior_data = prior_data

    def positional(self) -> PositionalPrior:
        """The prior, read from its JSONL on first use (the file may be generated after construction)."""
        if not isinstance(self._prior_data, PositionalPrior):
            assert self._prior_data is not None
            self._prior_data = PositionalPrior.from_jsonl(self._prior_data)
        return self._prior_data

    def content_free(self, n: int, question_type: str | None) -> list[list[int]]:
        """The citations of the content-free strategies this prompt is measured against."""
        limit = n if self.max_cited is None else min(n, self.max_cited)
        if self.prior == "cite_all":
            return [list(range(1, n + 1))] if n <= limit else []
        if self.prior == "positional":
            order = self.positional().ranking(question_type, n, self.beta)
            return [order[:k] for k in range(1, limit + 1)]
        return []

    def baseline(self, target: Sequence[int], n: int, question_type: str | None) -> float:
        """The best F-beta any content-free strategy earns on this prompt (0 when the family is empty)."""
        return max((f_beta(c, target, self.beta) for c in self.content_free(n, question_type)), default=0.0)

    def score(
        self, cited: Sequence[int], target: Sequence[int], n: int, question_type: str | None
    ) -> float | None:
        """The reward of one citation (correctness already checked); None: looking is not measurable."""
        over = self.max_cited is not None and len(set(cited)) > self.max_cited
        if self.prior == "expected":
            if not cited or over:
                return 0.0
            worth = self.positional().expected(cited, question_type, n, self.beta)
            return f_beta(cited, target, self.beta) - worth
        baseline = self.baseline(target, n, question_type)
        if baseline >= 1.0 - 1e-9:
            return None
        if not cited or over:
            return 0.0
        return max(0.0, f_beta(cited, target, self.beta) - baseline) / (1.0 - baseline)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        n = len(completions)
        parsed = _parsed(completions, columns)
        frame_times = columns.get("frame_times") or [[]] * n
        salient_times = columns.get("salient_times") or [None] * n
        selector = columns.get("selector_frames") or [None] * n
        truths = columns.get("answer") or [None] * n
        types = columns.get("question_type") or [None] * n
        out: list[float | None] = []
        for i, p in enumerate(parsed):
            target = salient_set(frame_times[i], salient_times[i], selector[i], self.tolerance_s)
            if not target:
                out.append(None)
                continue
            value = self.score(p.keyframes or [], target, len(frame_times[i]), types[i])
            wrong = self.requires_correct and not is_correct(p, truths[i])
            out.append(0.0 if wrong and value is not None else value)
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
        KeyframeReward(
            rewards_cfg.keyframe_tolerance_s,
            rewards_cfg.keyframe_requires_correct,
            beta=rewards_cfg.keyframe_beta,
            max_cited=rewards_cfg.keyframe_max_cited,
            prior=rewards_cfg.keyframe_prior,
            prior_data=rewards_cfg.keyframe_prior_data,
        ),
    ]
    weights = [w.format, w.accuracy, w.keyframe]
    if w.length > 0 and rewards_cfg.max_tokens is not None:
        funcs.append(LengthReward(rewards_cfg.max_tokens, rewards_cfg.length_buffer_tokens))
        weights.append(w.length)
    return funcs, weights
