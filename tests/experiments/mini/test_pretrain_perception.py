"""Perception questions (experiments.mini.pretrain_perception): the contract's prompt and grammar,
answers true to the clip, balanced letters, and none of the EgoSynth QA's questions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from egovlm.contract import SYSTEM_PROMPT, build_messages, parse_answer
from egovlm.schema import read_jsonl
from experiments.mini.pretrain_data import (
    PretrainDataError,
    build_examples,
    held_at,
    load_truth,
    visible_objects,
)
from experiments.mini.pretrain_perception import NOTHING, PerceptionExample, perception_examples


def _questions(folder: Path, count: int = 20) -> list[PerceptionExample]:
    examples = build_examples(folder, 4, 2, (112, 84), seed=0, per_set=0, perception_per_set=count)
    out = [ex for ex in examples if isinstance(ex, PerceptionExample)]
    assert len(out) == len(examples) == 3 * 2 * count
    return out


def test_prompt_is_the_contracts_and_target_parses(synth_slice: Path) -> None:
    for ex in _questions(synth_slice, 4):
        assert ex.prompt() == build_messages(ex.frames, ex.question, ex.options)
        assert ex.prompt()[0]["content"][0]["text"] == SYSTEM_PROMPT
        parsed = parse_answer(ex.target)
        assert parsed.format_ok, (ex.target, parsed.problems)
        assert parsed.answer in ex.options
        assert len(set(ex.options.values())) == 5
        assert set(parsed.keyframes or []) <= {f.index for f in ex.frames}


def test_answers_are_true_to_the_clip(synth_slice: Path) -> None:
    clips = {c.clip_id: c for c in load_truth(synth_slice)}
    kinds = Counter()
    for ex in _questions(synth_slice):
        kinds[ex.kind] += 1
        clip = clips[ex.clip_id]
        parsed = parse_answer(ex.target)
        correct = ex.options[parsed.answer or ""]
        if ex.kind == "hand":
            hand, index = ex.question.split(" the ")[1].split()[0], int(ex.question.rstrip("?").split()[-1])
            frame = ex.frames[index - 1]
            held = held_at(clip.events, frame.timestamp_s).get(hand)
            assert correct == (f"the {held}" if held else NOTHING)
            assert parsed.keyframes == [index]
            # no other option is also true
            assert sum(o == correct for o in ex.options.values()) == 1
        elif ex.kind == "visible":
            index = int(ex.question.rstrip("?").split()[-1])
            seen = visible_objects(clip, ex.frames[index - 1].timestamp_s)
            assert correct.removeprefix("the ") in seen
            wrong = [o.removeprefix("the ") for o in ex.options.values() if o != correct]
            assert not set(wrong) & set(seen)
        else:
            assert correct == "the " + ex.question.removeprefix("Which option is the ").rstrip("?")
    assert set(kinds) == {"hand", "visible", "lookup"}


def test_letters_are_balanced(synth_slice: Path) -> None:
    letters = Counter(parse_answer(ex.target).answer for ex in _questions(synth_slice, 60))
    assert set(letters) == set("ABCDE")
    assert max(letters.values()) < 2 * min(letters.values())


def test_never_the_egosynth_questions(synth_slice: Path) -> None:
    qa = {item.question for item in read_jsonl(synth_slice / "qa.jsonl")}
    asked = {ex.question for ex in _questions(synth_slice)}
    assert qa and not qa & asked
    for word in ("first", "last", "before", "end up", "how many", "overall"):
        assert not any(word in q.lower() for q in asked)


def test_unknown_kind_is_named(synth_slice: Path) -> None:
    clip = load_truth(synth_slice)[0]
    with pytest.raises(PretrainDataError, match="colour"):
        perception_examples(clip, [], 1, np.random.default_rng(0), kinds=["colour"])


def test_perception_qa_rows_ask_about_the_uniform_frames_eval_samples(
    synth_slice: Path, tmp_path: Path
) -> None:
    """The rows `egovlm eval` reads: valid QA items whose video resolves in the folder and whose
    answer letter names the option the perception question's target chose."""
    from egovlm.schema import write_jsonl
    from egovlm.video import uniform_times
    from experiments.mini.pretrain_perception import perception_qa

    items = perception_qa(synth_slice, frames=4, per_clip=3, seed=0)
    clips = {c.clip_id: c for c in load_truth(synth_slice)}
    assert len(items) == 3 * len(clips) and len({i.id for i in items}) == len(items)
    for item in items:
        assert (synth_slice / str(item.video)).is_file()
        assert item.answer in item.options and item.question_type.startswith("perception_")
        clip = clips[item.meta["clip_id"]]
        if item.question_type == "perception_hand":  # the answer is what that hand holds in frame k
            k = int(item.question.rsplit("frame ", 1)[1].rstrip("?"))
            t = uniform_times(clip.duration_s, 4)[k - 1]
            hand = "left" if " left " in item.question else "right"
            held = held_at(clip.events, t).get(hand)
            assert item.options[item.answer] == (f"the {held}" if held else "nothing")
    write_jsonl(tmp_path / "perception.jsonl", items)  # round-trips through the schema
    assert read_jsonl(tmp_path / "perception.jsonl") == items
