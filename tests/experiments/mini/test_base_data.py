"""The base stage's questions (experiments.mini.base_data): the exact eval prompt, answer-only targets that
parse to the gold answer, answers recomputed from the clip's events, and never a GRPO type."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from egovlm.contract import SYSTEM_PROMPT, answers_match, build_messages, parse_answer
from egovlm.frames import Frame
from egovlm.schema import read_jsonl
from egovlm.video import uniform_times
from experiments.mini.base_data import (
    BASE_TYPES,
    GRPO_TYPES,
    OPEN_FORMS,
    QAExample,
    answer_target,
    base_qa,
    build_base_examples,
    draw_questions,
    make_question,
    place_phrase,
    val_questions,
)
from experiments.mini.pretrain_data import ClipTruth, PretrainDataError, held_at, load_truth, visible_objects
from experiments.mini.pretrain_perception import NOTHING, Question


def _questions(folder: Path, per_set: int = 12, form: str = "text") -> list[QAExample]:
    examples = build_base_examples(folder, 4, 2, (112, 84), 0, per_set, open_share=0.4, answer_form=form)
    out = [ex for ex in examples if isinstance(ex, QAExample)]
    assert (
        len(out) == len(examples) and len(out) >= 3 * 2 * per_set // 2
    )  # clips with no pick-up redraw kinds, up to a bound
    return out


def _plan(clips: int, duration: float = 16.0) -> list[ClipTruth]:
    """Planned clips (nothing rendered) as the ground truth the generators read."""
    from egovlm.synth.generate import SynthConfig, build_clip

    out = []
    for i in range(clips):
        c = build_clip("train", 1, i, SynthConfig(size=(224, 168), fps=10, duration=duration))
        events = [{"clip_id": c.clip_id, **e.to_json()} for e in c.script.events]
        render = ("train", 1, i, (224, 168), 10.0)
        out.append(ClipTruth(c.clip_id, Path(c.video), duration, [], events, render))
    return out


def _frames(duration: float, n: int = 8) -> list[Frame]:
    return [
        Frame(i + 1, t, np.zeros((84, 112, 3), np.uint8)) for i, t in enumerate(uniform_times(duration, n))
    ]


def _planned_questions(
    clips: int, per_clip: int, rng: np.random.Generator, open_share: float
) -> Iterator[tuple[ClipTruth, list[Frame], Question]]:
    """``per_clip`` questions of every base type (draw_questions) about each of ``clips`` planned
    clips' uniform frames, with the clip and frames they are about."""
    for clip in _plan(clips):
        frames = _frames(clip.duration_s)
        for q in draw_questions(clip, frames, per_clip, rng, BASE_TYPES, open_share=open_share):
            yield clip, frames, q


def _gold_words(ex: QAExample) -> str:
    q = ex.question
    return q.answer if q.options is None else q.options[q.answer]


def test_prompt_is_the_contracts_and_the_answer_only_target_parses_to_the_gold_answer(
    synth_slice: Path,
) -> None:
    for form in ("text", "letter"):
        for ex in _questions(synth_slice, 6, form):
            q = ex.question
            assert ex.prompt() == build_messages(ex.frames, q.question, q.options)
            assert ex.prompt()[0]["content"][0]["text"] == SYSTEM_PROMPT
            letters = "".join(q.options) if q.options else None
            parsed = parse_answer(ex.target, letters, q.options)
            assert parsed.format_ok, (ex.target, parsed.problems)
            assert parsed.think == ""  # answer-only: nothing inside <think>
            assert answers_match(parsed.answer, q.answer), (ex.target, q)
            assert parsed.keyframes and set(parsed.keyframes) <= {f.index for f in ex.frames}
            if q.options is not None:
                # text form writes the option's words, letter form the letter; both mean the same option
                written = parsed.answer_text
                assert written == (q.options[q.answer] if form == "text" else q.answer)


def test_answers_are_true_to_the_clips_events(synth_slice: Path) -> None:
    clips = {c.clip_id: c for c in load_truth(synth_slice)}
    kinds: Counter[str] = Counter()
    for ex in _questions(synth_slice):
        kinds[ex.kind + ("_open" if ex.question.is_open else "")] += 1
        _check_truth(clips[ex.clip_id], ex)
    assert {k for k in kinds if not k.endswith("_open")} == set(BASE_TYPES)
    assert {k.removesuffix("_open") for k in kinds if k.endswith("_open")} == set(OPEN_FORMS)


def _statement_holds(text: str, picks: list[dict[str, Any]]) -> bool:
    """Whether a statement option is true of the clip's pick-ups, read from events.jsonl."""
    picked = [str(e["object"]) for e in picks]
    if text.startswith("The wearer never picked up the "):
        return text.removeprefix("The wearer never picked up the ").removesuffix(".") not in picked
    if text.startswith("The wearer picked up the "):
        return text.removeprefix("The wearer picked up the ").removesuffix(".") in picked
    assert text.endswith(" was picked up first."), text
    return text.removeprefix("The ").removesuffix(" was picked up first.") == picked[0]


def _check_truth(clip: ClipTruth, ex: QAExample) -> None:
    """Every answer recomputed from events.jsonl (and, for visibility, the renderer)."""
    q, gold = ex.question, _gold_words(ex)
    picks = [e for e in clip.events if e["action"] == "pick_up"]
    if q.options is not None:
        assert len(set(q.options.values())) == 5
    if ex.kind == "hand":
        hand, index = q.question.split(" the ")[1].split()[0], int(q.question.rstrip("?").split()[-1])
        held = held_at(clip.events, ex.frames[index - 1].timestamp_s).get(hand)
        assert gold == (f"the {held}" if held else NOTHING)
        assert parse_answer(ex.target, None).keyframes == [index]
    elif ex.kind == "visible":
        index = int(q.question.rstrip("?").split()[-1])
        seen = visible_objects(clip, ex.frames[index - 1].timestamp_s)
        assert gold.removeprefix("the ") in seen
        assert not {o.removeprefix("the ") for o in (q.options or {}).values() if o != gold} & set(seen)
    elif ex.kind == "place":
        name, index = q.question.removeprefix("Where is the ").removesuffix("?").split(" in frame ")
        t = ex.frames[int(index) - 1].timestamp_s
        assert name in visible_objects(clip, t) and name not in held_at(clip.events, t).values()
        moves = [e for e in clip.events if e["object"] == name and e["action"] in ("pick_up", "put_down")]
        put = [e for e in moves if e["action"] == "put_down" and float(e["t"]) <= t]
        later = [e for e in moves if e["action"] == "pick_up" and float(e["t"]) > t]
        if put:  # where it was last put down; else, if it is picked up later, where that happens
            assert gold == place_phrase(put[-1]["place"])
        elif later:
            assert gold == place_phrase(later[0]["place"])
        assert gold not in [o for o in (q.options or {}).values() if o != gold]
    elif ex.kind == "start_place":
        name = q.question.removeprefix("Where was the ").removesuffix(" at the start?")
        first = next(e for e in picks if e["object"] == name)
        assert gold == place_phrase(first["place"])
    elif ex.kind == "picked_up":
        picked = {e["object"] for e in picks}
        assert gold.removeprefix("the ") in picked
        assert not {o.removeprefix("the ") for o in (q.options or {}).values() if o != gold} & picked
    elif ex.kind == "first_pickup":
        assert gold == f"the {picks[0]['object']}"
    elif ex.kind == "count":
        if q.question == "How many times did the wearer pick something up?":
            assert gold == str(len(picks))
        elif q.question.startswith("How many times did the wearer pick up the "):
            name = q.question.removeprefix("How many times did the wearer pick up the ").rstrip("?")
            assert gold == str(sum(e["object"] == name for e in picks))
        else:
            assert gold == str(
                sum(
                    e["action"] == "put_down" and place_phrase(e["place"]).rstrip(".").lower() in q.question
                    for e in clip.events
                )
            )
        values = [int(v) for v in (q.options or {}).values()]
        assert values == sorted(values) and values == list(range(values[0], values[0] + 5))
    elif ex.kind == "overall":
        assert gold.endswith(".") and q.options is not None
    elif ex.kind == "statement":
        assert q.options is not None
        truths = [o for o in q.options.values() if _statement_holds(o, picks)]
        assert truths == [gold], (q.options, gold)
    else:
        raise AssertionError(ex.kind)


def test_no_grpo_type_is_ever_produced_on_a_50_clip_plan() -> None:
    rng = np.random.default_rng(0)
    kinds: Counter[str] = Counter()
    for clip, frames, q in _planned_questions(50, 12, rng, open_share=0.5):
        kinds[q.kind] += 1
        assert q.kind in BASE_TYPES and q.kind not in GRPO_TYPES
        for word in ("last", "end up", "before", "right after"):
            assert word not in q.question.lower()
        ex = QAExample(clip.clip_id, q, frames, answer_target(q, frames))
        _check_truth(clip, ex)
    assert set(kinds) == set(BASE_TYPES)


def test_options_are_reshuffled_per_example_and_letters_balanced(synth_slice: Path) -> None:
    letters: Counter[str] = Counter()
    layouts: dict[tuple[str, str], set[tuple[str, ...]]] = {}
    for ex in _questions(synth_slice, 40):
        q = ex.question
        if q.options is None:
            continue
        letters[q.answer] += 1
        if q.kind in ("first_pickup", "overall"):
            layouts.setdefault((ex.clip_id, q.question), set()).add(tuple(q.options.values()))
    assert set(letters) == set("ABCDE") and max(letters.values()) < 2 * min(letters.values())
    assert any(len(v) > 1 for v in layouts.values())  # the same question, its options in new orders


def test_single_frame_prompts_ask_only_single_frame_types_and_unknown_types_are_named(
    synth_slice: Path,
) -> None:
    with pytest.raises(PretrainDataError, match="single-frame"):
        build_base_examples(synth_slice, 1, 1, (112, 84), 0, 2, kinds=["first_pickup"])
    with pytest.raises(PretrainDataError, match="where_ended"):
        build_base_examples(synth_slice, 4, 1, (112, 84), 0, 2, kinds=["where_ended"])
    one = build_base_examples(synth_slice, 1, 2, (112, 84), 0, 4, kinds=["hand", "visible"])
    assert one and {ex.kind for ex in one if isinstance(ex, QAExample)} <= {"hand", "visible"}


def test_val_questions_cover_every_kind_and_base_qa_rows_round_trip(
    synth_slice: Path, tmp_path: Path
) -> None:
    from egovlm.schema import write_jsonl

    asked = val_questions(synth_slice, 4, (112, 84), 1)
    assert {ex.kind for ex in asked} == set(BASE_TYPES)
    assert {ex.kind for ex in asked if ex.question.is_open} == set(OPEN_FORMS)
    items = base_qa(synth_slice, 4, 1)
    assert len(items) == len(asked) and len({i.id for i in items}) == len(items)
    for item in items:
        assert (synth_slice / str(item.video)).is_file() and item.question_type in BASE_TYPES
    write_jsonl(tmp_path / "base_qa.jsonl", items)
    assert read_jsonl(tmp_path / "base_qa.jsonl") == items


def test_a_question_without_open_form_refuses_one(synth_slice: Path) -> None:

    clip = load_truth(synth_slice)[0]
    with pytest.raises(PretrainDataError, match="no open form"):
        make_question(clip, _frames(clip.duration_s, 4), "count", np.random.default_rng(0), open_form=True)


def test_statement_questions_mix_sentence_shapes_and_exactly_one_is_true() -> None:
    rng = np.random.default_rng(3)
    shapes: Counter[str] = Counter()
    for clip in _plan(30):
        frames = _frames(clip.duration_s)
        for _ in range(4):
            q = make_question(clip, frames, "statement", rng)
            if q is None:
                assert not [e for e in clip.events if e["action"] == "pick_up"]
                continue
            ex = QAExample(clip.clip_id, q, frames, answer_target(q, frames))
            _check_truth(clip, ex)  # exactly one option holds, and it is the gold one
            for text in (q.options or {}).values():
                shapes["never" if " never " in text else "first" if text.endswith("first.") else "did"] += 1
    assert set(shapes) == {"never", "first", "did"}  # a sentence's shape does not tell the answer


def test_reword_keeps_the_answer_and_every_base_template_has_paraphrases() -> None:
    """Every question a base type asks (multiple-choice and open) can be reworded; the rewording keeps
    options, answer and moments, changes the words, never uses a held-out type's words, and an
    unknown template is refused by name."""
    from experiments.mini.base_data import REWORDINGS, reword

    rng = np.random.default_rng(0)
    seen: Counter[str] = Counter()
    for _, _, q in _planned_questions(30, 12, rng, open_share=0.5):
        r = reword(q, rng)
        assert r.question != q.question and r.kind == q.kind
        assert (r.options, r.answer, r.salient_times) == (q.options, q.answer, q.salient_times)
        for word in ("last", "end up", "before", "right after"):
            assert word not in r.question.lower()
        seen[r.question.split()[0]] += 1
    assert len(seen) > 5
    clip = _plan(1)[0]
    odd = make_question(clip, _frames(clip.duration_s), "first_pickup", rng)
    assert odd is not None
    with pytest.raises(PretrainDataError, match="no rewording"):
        reword(dataclasses.replace(odd, question="Which object did the wearer pick up last?"), rng)
    drawn = draw_questions(clip, _frames(clip.duration_s), 40, np.random.default_rng(1), reword_share=0.5)
    canonical = sum(any(p.fullmatch(q.question) for p, _ in REWORDINGS) for q in drawn)
    assert 0.2 * len(drawn) < canonical < 0.8 * len(drawn)  # reword_share 0.5 of them reworded


def test_restyle_rewrites_all_five_options_alike_and_the_target_copies_the_new_words() -> None:
    """Every multiple-choice base type has option styles; a restyled question keeps its letters,
    answer and moments, every option changes, the answer-only target writes the restyled words
    (which parse back to the gold letter), and a statement keeps its truth (the restyled true option
    is the one built from the true statement)."""
    from experiments.mini.base_data import restyle

    rng = np.random.default_rng(5)
    styled: Counter[str] = Counter()
    for clip, frames, q in _planned_questions(30, 16, rng, open_share=0.3):
        r = restyle(q, rng)
        if q.options is None:
            assert r is q
            continue
        assert r.options is not None and list(r.options) == list(q.options)
        assert (r.answer, r.salient_times, r.question) == (q.answer, q.salient_times, q.question)
        assert r.options != q.options  # never the canonical style again
        styled[q.kind] += 1
        assert all(r.options[k] != q.options[k] for k in q.options)
        target = answer_target(r, frames)
        assert f"<answer>{r.options[r.answer]}</answer>" in target
        parsed = parse_answer(target, "".join(r.options), r.options)
        assert parsed.format_ok and parsed.answer == q.answer
        _check_truth(clip, QAExample(clip.clip_id, q, frames, answer_target(q, frames)))
        if q.kind == "statement":  # the same fact in other words: polarity, "first" and object kept
            for k in q.options:
                old, new = q.options[k], r.options[k]
                assert ("never" in old) == ("never" in new or new.startswith("Nobody"))
                assert ("first" in old.lower()) == ("first" in new.lower())
                name = old.removeprefix("The wearer never picked up the ").removeprefix(
                    "The wearer picked up the "
                )
                name = name.removeprefix("The ").removesuffix(" was picked up first.").rstrip(".")
                assert name in new
    assert set(styled) == set(BASE_TYPES)  # every type has at least one style that keeps options apart


def test_start_place_targets_cite_frame_one_or_the_moment_the_object_leaves(synth_slice: Path) -> None:
    """``start_cites``: "first_frame" (phases 1-4) cites frame 1 whatever the object; "pickup"
    (phase 5) cites the frame nearest the object's first pick-up, so the citation depends on which
    object is asked about; the answer is the same either way."""
    cited: dict[str, list[tuple[str, list[int]]]] = {"first_frame": [], "pickup": []}
    for clip in load_truth(synth_slice):
        frames = _frames(clip.duration_s)
        picks = [e for e in clip.events if e["action"] == "pick_up"]
        for cites, out in cited.items():
            rng = np.random.default_rng(0)
            for _ in range(6):
                q = make_question(clip, frames, "start_place", rng, start_cites=cites)
                if q is None:
                    continue
                name = q.question.removeprefix("Where was the ").removesuffix(" at the start?")
                moment = float(next(e for e in picks if e["object"] == name)["t"])
                keyframes = parse_answer(answer_target(q, frames), None, q.options).keyframes or []
                nearest = min(frames, key=lambda f: abs(f.timestamp_s - moment)).index
                assert keyframes == ([1] if cites == "first_frame" else [nearest])
                out.append((q.answer, keyframes))
    assert [a for a, _ in cited["first_frame"]] == [a for a, _ in cited["pickup"]]  # same questions
    assert len({tuple(k) for _, k in cited["pickup"]}) > 1, "precondition: objects leave at different times"
    with pytest.raises(PretrainDataError, match="start-place citations must be one of first_frame, pickup"):
        make_question(
            load_truth(synth_slice)[0], _frames(8.0), "start_place", np.random.default_rng(0), start_cites="x"
        )


def test_put_down_questions_count_and_cite_an_objects_put_downs() -> None:
    """The development type ``put_down``: the answer is how many times the named object was put
    down (a count, options as a count question's), the target cites the frame nearest each of those
    put-downs; restyle and reword know it; it is accepted by the kind check but is no base type."""
    from experiments.mini.base_data import DEV_TYPES, check_kinds, restyle, reword

    asked = 0
    for clip in _plan(12):
        frames = _frames(clip.duration_s)
        rng = np.random.default_rng(1)
        for _ in range(3):
            q = make_question(clip, frames, "put_down", rng)
            assert q is not None and q.options is not None
            name = q.question.removeprefix("How many times did the wearer put the ").removesuffix(" down?")
            puts = [float(e["t"]) for e in clip.events if e["action"] == "put_down" and e["object"] == name]
            assert puts and q.options[q.answer] == str(len(puts))
            assert list(q.options.values()) == sorted(q.options.values(), key=int)  # ascending counts
            nearest = sorted({min(frames, key=lambda f: abs(f.timestamp_s - t)).index for t in puts})
            assert parse_answer(answer_target(q, frames), None, q.options).keyframes == nearest
            assert restyle(q, rng).answer == q.answer and reword(q, rng).answer == q.answer
            asked += 1
    assert asked == 36
    assert "put_down" in DEV_TYPES and "put_down" not in BASE_TYPES
    check_kinds(["put_down", "count"], 8)
    with pytest.raises(PretrainDataError, match="unknown base question type"):
        check_kinds(["put_downs"], 8)
