"""Frame-level perception questions and the base stage's question record.

:class:`Question` is one base-stage question with its exact answer: multiple choice (five lettered
options, ``answer`` the letter) or open (``options`` None, ``answer`` the words), plus the times of
the moments the answer rests on (``salient_times``), from which the target's ``<keyframes>`` are
the nearest prompt frames. :mod:`experiments.mini.base_data` renders every question through the
contract's own prompt and answer-only target.

This module holds the questions read off one frame, the kind of question VLM instruction data
holds:

* ``hand`` — which object the left or right hand holds in frame k (or nothing);
* ``visible`` — which of five objects can be seen in frame k;
* ``place`` — where an object resting in frame k is ("On the shelf.").

Options are lettered uniformly at random (:func:`lettered`), so no letter or position can be learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from egovlm.frames import Frame
from egovlm.schema import OPTION_LETTERS, QAItem
from egovlm.synth.qa import place_phrase, wrong_places
from experiments.mini.pretrain_data import (
    ClipTruth,
    PretrainDataError,
    clip_places,
    held_at,
    planned_clip,
    resting_places,
    visible_objects,
)

NOTHING = "nothing"


@dataclass
class Question:
    """A base-stage question and its exact answer (module docstring)."""

    clip_id: str
    kind: str  # the question type (hand, visible, start_place, ...)
    question: str
    options: dict[str, str] | None  # None: an open question
    answer: str  # the option letter, or the words of an open question
    salient_times: list[float] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.options is None

    @property
    def answer_text(self) -> str:
        """The correct answer in words: the correct option's text, or the open answer."""
        return self.answer if self.options is None else self.options[self.answer]

    def to_item(self, clip: ClipTruth, item_id: str) -> QAItem:
        """The question as a dataset row about ``clip`` (what ``egovlm eval`` reads)."""
        return QAItem(
            id=item_id,
            video=f"videos/{clip.video.name}",
            question=self.question,
            options=self.options,
            answer=self.answer,
            salient_times=[round(t, 6) for t in self.salient_times],
            duration_s=clip.duration_s,
            question_type=self.kind,
            source="egosynth-base",
            meta={"clip_id": clip.clip_id},
        )


def scene_objects(clip: ClipTruth) -> list[str]:
    """Names of the clip's objects (from its re-planned script; nothing is rendered)."""
    if clip.render is None:
        raise PretrainDataError(f"{clip.clip_id}: no clips.jsonl row, so the scene's objects are unknown")
    return [o.name for o in planned_clip(*clip.render, clip.duration_s).script.objects]


def _others(pool: Sequence[str], exclude: set[str], k: int, rng: np.random.Generator) -> list[str]:
    names = [n for n in dict.fromkeys(pool) if n not in exclude]
    return [names[int(i)] for i in rng.permutation(len(names))[:k]]


def distractors(clip: ClipTruth, exclude: set[str], k: int, rng: np.random.Generator) -> list[str]:
    """``k`` object names not in ``exclude``: the clip's own objects first, then other kinds."""
    from egovlm.synth.objects import CATALOGUE

    own = _others(scene_objects(clip), exclude, k, rng)
    rest = _others([c.name for c in CATALOGUE], exclude | set(own), k - len(own), rng)
    return own + rest


def lettered(correct: str, wrong: Sequence[str], rng: np.random.Generator) -> tuple[dict[str, str], str]:
    """Five options with the correct one at a uniformly drawn letter; returns (options, letter)."""
    texts = [correct, *wrong]
    if len(texts) != len(OPTION_LETTERS) or len(set(texts)) != len(texts):
        raise PretrainDataError(f"need five distinct options, got {texts}")
    order = rng.permutation(len(texts))
    options = {OPTION_LETTERS[i]: texts[int(j)] for i, j in enumerate(order)}
    letter = next(k for k, v in options.items() if v == correct)
    return options, letter


def the(name: str) -> str:
    return NOTHING if name == NOTHING else f"the {name}"


def hand_question(
    clip: ClipTruth, frames: Sequence[Frame], rng: np.random.Generator, open_form: bool = False
) -> Question:
    frame = frames[int(rng.integers(len(frames)))]
    hand = ("right", "left")[int(rng.integers(2))]
    held = held_at(clip.events, frame.timestamp_s).get(hand, NOTHING)
    question = f"Which object does the {hand} hand hold in frame {frame.index}?"
    if open_form:
        return Question(clip.clip_id, "hand", question, None, the(held), [frame.timestamp_s])
    wrong = distractors(clip, {held}, 4 if held == NOTHING else 3, rng)
    wrong += [] if held == NOTHING else [NOTHING]
    options, letter = lettered(the(held), [the(n) for n in wrong], rng)
    return Question(clip.clip_id, "hand", question, options, letter, [frame.timestamp_s])


def visible_question(clip: ClipTruth, frames: Sequence[Frame], rng: np.random.Generator) -> Question | None:
    """None when no frame of the set shows an object."""
    seen = {f.index: visible_objects(clip, f.timestamp_s) for f in frames}
    candidates = [f for f in frames if seen[f.index]]
    if not candidates:
        return None
    frame = candidates[int(rng.integers(len(candidates)))]
    name = seen[frame.index][int(rng.integers(len(seen[frame.index])))]
    wrong = [the(n) for n in distractors(clip, set(seen[frame.index]), 4, rng)]
    options, letter = lettered(the(name), wrong, rng)
    question = f"Which of these objects can be seen in frame {frame.index}?"
    return Question(clip.clip_id, "visible", question, options, letter, [frame.timestamp_s])


def place_question(clip: ClipTruth, frames: Sequence[Frame], rng: np.random.Generator) -> Question | None:
    """Where an object that rests in frame k is (its place, as the QA's place phrases write it:
    "On the shelf."); the wrong places prefer the clip's own. None when no frame shows a resting
    object. The single-frame skill under start_place, overall and the held-out where_ended."""
    rests = {f.index: resting_places(clip, f.timestamp_s) for f in frames}
    candidates = [f for f in frames if rests[f.index]]
    if not candidates:
        return None
    frame = candidates[int(rng.integers(len(candidates)))]
    names = sorted(rests[frame.index])
    name = names[int(rng.integers(len(names)))]
    place = rests[frame.index][name]
    options, letter = lettered(place_phrase(place), wrong_places(place, clip_places(clip), rng), rng)
    question = f"Where is the {name} in frame {frame.index}?"
    return Question(clip.clip_id, "place", question, options, letter, [frame.timestamp_s])
