"""Perception questions in the contract's grammar: the base stage's stand-in for instruction tuning.

R1-Zero starts from an *instruction-tuned* model (Qwen2.5-VL-3B-Instruct): one that, asked to "think
inside <think></think> … give the option letter inside <answer></answer>", answers in that form some
of the time, so GRPO has rewards that differ within a group to learn from. Without it, a base model
trained on descriptions alone never writes a parsable answer, the accuracy reward never fires and
GRPO has nothing to learn (docs/mini_experiment/LOG.md, run 1). A 2.5 M model does not carry "write
X inside <a></a>" over to a new phrasing, so this stage teaches the one prompt form the later stages
use.

These examples are rendered by the contract itself (:func:`egovlm.contract.build_messages`:
the same system prompt, frames and lettered options as the QA) and the target is in the
answer grammar. What they ask is single-frame *perception*, the kind of question VLM
instruction data holds, never the EgoSynth QA's questions about the clip's events (which object
was picked up first or last, in which order, where something ended up, how many times, what the
wearer was doing overall):

* ``hand`` — which object the left or right hand holds in frame k (or nothing);
* ``visible`` — which of five objects can be seen in frame k;
* ``lookup`` — which option names a given object: reading the lettered list, nothing else.

The ``<think>`` block states the fact read from the frame (``Frame 3: the right hand holds the
black phone.``), ``<keyframes>`` cites the frame(s) the fact is read from, ``<answer>`` holds a
letter drawn uniformly, so no letter or position can be learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from egovlm.contract import Message, build_messages, format_answer, parse_answer
from egovlm.frames import Frame
from egovlm.schema import OPTION_LETTERS, QAItem
from experiments.mini.pretrain_data import (
    ClipTruth,
    PretrainDataError,
    decode_frame_sets,
    hands_line,
    held_at,
    load_truth,
    planned_clip,
    visible_line,
    visible_objects,
)

KINDS: tuple[str, ...] = ("hand", "visible", "lookup")
NOTHING = "nothing"


@dataclass
class PerceptionExample:
    """One frame set, a perception question with five lettered options and its graded answer."""

    clip_id: str
    kind: str
    question: str
    options: dict[str, str]
    frames: list[Frame]
    target: str

    def prompt(self) -> list[Message]:
        return build_messages(self.frames, self.question, self.options)


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


def _the(name: str) -> str:
    return NOTHING if name == NOTHING else f"the {name}"


def hand_question(clip: ClipTruth, frames: list[Frame], rng: np.random.Generator) -> PerceptionExample:
    frame = frames[int(rng.integers(len(frames)))]
    hand = ("right", "left")[int(rng.integers(2))]
    held = held_at(clip.events, frame.timestamp_s).get(hand, NOTHING)
    wrong = distractors(clip, {held}, 4 if held == NOTHING else 3, rng)
    wrong += [] if held == NOTHING else [NOTHING]
    options, letter = lettered(_the(held), [_the(n) for n in wrong], rng)
    question = f"Which object does the {hand} hand hold in frame {frame.index}?"
    target = format_answer(hands_line(frame, clip.events), [frame.index], letter)
    return PerceptionExample(clip.clip_id, "hand", question, options, frames, target)


def visible_question(
    clip: ClipTruth, frames: list[Frame], rng: np.random.Generator
) -> PerceptionExample | None:
    seen = {f.index: visible_objects(clip, f.timestamp_s) for f in frames}
    candidates = [f for f in frames if seen[f.index]]
    if not candidates:
        return None
    frame = candidates[int(rng.integers(len(candidates)))]
    name = seen[frame.index][int(rng.integers(len(seen[frame.index])))]
    options, letter = lettered(
        _the(name), [_the(n) for n in distractors(clip, set(seen[frame.index]), 4, rng)], rng
    )
    question = f"Which of these objects can be seen in frame {frame.index}?"
    target = format_answer(visible_line(clip, frame), [frame.index], letter)
    return PerceptionExample(clip.clip_id, "visible", question, options, frames, target)


def lookup_question(clip: ClipTruth, frames: list[Frame], rng: np.random.Generator) -> PerceptionExample:
    objects = scene_objects(clip)
    name = objects[int(rng.integers(len(objects)))]
    options, letter = lettered(_the(name), [_the(n) for n in distractors(clip, {name}, 4, rng)], rng)
    cited = [f.index for f in frames if name in visible_objects(clip, f.timestamp_s)][:2]
    target = format_answer(f"The {name} is option {letter}.", cited, letter)
    return PerceptionExample(clip.clip_id, "lookup", f"Which option is the {name}?", options, frames, target)


def perception_examples(
    clip: ClipTruth, frames: list[Frame], count: int, rng: np.random.Generator, kinds: Sequence[str] = KINDS
) -> list[PerceptionExample]:
    """``count`` questions about one frame set, kinds drawn uniformly from ``kinds``."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise PretrainDataError(
            f"unknown perception question kind(s) {unknown}; choose from {', '.join(KINDS)}"
        )
    out: list[PerceptionExample] = []
    for _ in range(count):
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "hand":
            out.append(hand_question(clip, frames, rng))
        elif kind == "visible":
            ex = visible_question(clip, frames, rng)
            out.append(ex if ex is not None else lookup_question(clip, frames, rng))
        else:
            out.append(lookup_question(clip, frames, rng))
    return out


def perception_qa(
    folder: Path, frames: int, per_clip: int, seed: int, size: tuple[int, int] = (112, 84)
) -> list[QAItem]:
    """Perception questions about each clip's uniform frame set (the one ``egovlm eval`` samples),
    as QA rows: evaluating a model on them measures whether it answers the questions the base stage
    trained on, i.e. whether it binds an option's text to its letter at all (docs/mini_experiment).
    ``size`` only affects the decoded frames, which the questions do not look at."""
    rng = np.random.default_rng(seed)
    items = []
    for clip in load_truth(folder):
        uniform = decode_frame_sets(clip, frames, 1, size, rng)[0]
        for k, ex in enumerate(perception_examples(clip, uniform, per_clip, rng)):
            letter = parse_answer(ex.target).answer
            items.append(
                QAItem(
                    id=f"{clip.clip_id}-perception{k:02d}-{ex.kind}",
                    video=f"videos/{clip.video.name}",
                    question=ex.question,
                    options=ex.options,
                    answer=letter,
                    duration_s=clip.duration_s,
                    question_type=f"perception_{ex.kind}",
                    source="egosynth-perception",
                    meta={"clip_id": clip.clip_id},
                )
            )
    return items
