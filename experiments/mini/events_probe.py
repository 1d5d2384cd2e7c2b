"""Does a base model place events in its descriptions? The `events` description (phases 2-4 train it:
every pick-up and put-down with its nearest prompt frame) generated greedily on each clip's uniform
frame set, each event's written frame compared with the truth.

The question it answers (docs/mini_experiment/LOG.md, "Teaching the base to cite put-downs"): when a
model does not cite an event for a question, is the event beyond what it sees in the frames, or is
the skill there (it writes the right frame in a description) and only not bound to ``<keyframes>``?
Events are matched by (action, object, occurrence): the k-th put-down of the cup in the truth with
the k-th one the model wrote, whatever times and places the sentences give. :func:`placement` sorts
every true event by where it was written: at its nearest frame, at the other frame of its bracket
(the two frames around it: the state right, the motion wrong), outside it, or not at all, and counts
the written events that match none (LOG.md, "Story or motion").

    python -m experiments.mini.events_probe --model models/egovlm-mini-base \
        --data runs/mini_base/data/val --clips 30 --out runs/events_probe

With ``--questions`` (a question file about the folder's clips, e.g. the test split's eval.jsonl) it
also asks how far citations could go if they were read off a description: each question's citation
derived by rule from the events the model wrote (the last pick-up's frame for "what did I pick up
last?", the last put-down of the cup for "where did the cup end up?", ...), scored like the keyframe
reward (F1 against each salient moment's nearest frame) beside the best fixed set of positions. Three
references use the truth's events: placed at their nearest frame (what the rules give a perfect
description; below 1 only where a rule cannot tell, e.g. ties), at the first frame after the event
(what a perceiver that knows everything each frame shows, held or resting, but nothing of the motion
would write), and at the frame showing the hand's movement of the event (what a perceiver of each
frame's motion phase would write). LOG.md, "What a citation must see". One more uses the model's
own description with each event written inside its bracket moved to the nearer frame: what a perfect
read of the motion would make of the model's story.

    python -m experiments.mini.events_probe --model models/egovlm-mini-base \
        --data runs/mini8/data/test --questions runs/mini8/data/test/eval.jsonl --out runs/derived
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.atomic import atomic_write_text
from egovlm.schema import QAItem, read_jsonl

ACTIONS = ("pick_up", "put_down")
_FRAME = re.compile(r"\(frame (\d+)\)")
_PICK = re.compile(r"picks up the (.+?) (from .+?) \(frame")
_PUT = re.compile(r"puts the (.+?) down (.+?) \(frame")


@dataclass(frozen=True)
class Written:
    """One event sentence of an `events` description: what happened to which object, the place
    phrase as written ("from the sink", "onto the shelf"), and the frame it names."""

    action: str
    obj: str
    place: str
    frame: int


def written_events(text: str) -> list[Written]:
    """The event sentences of an `events` description, in order. Lines that are not such sentences,
    or give no frame, are skipped."""
    out = []
    for line in text.splitlines():
        frame, pick, put = _FRAME.search(line), _PICK.search(line), _PUT.search(line)
        if frame is None:
            continue
        if pick is not None:
            out.append(Written("pick_up", pick.group(1), pick.group(2), int(frame.group(1))))
        elif put is not None:
            out.append(Written("put_down", put.group(1), put.group(2), int(frame.group(1))))
    return out


def events_written(text: str) -> list[tuple[str, str, int, int]]:
    """(action, object, occurrence, frame) of each event sentence of an `events` description: the
    k-th pick-up (or put-down) of an object has occurrence k."""
    seen: Counter[tuple[str, str]] = Counter()
    out = []
    for e in written_events(text):
        seen[e.action, e.obj] += 1
        out.append((e.action, e.obj, seen[e.action, e.obj], e.frame))
    return out


def _place_name(phrase: str) -> str | None:
    """The EgoSynth place a phrase names, in any of its forms ("in the sink", "into the sink")."""
    from egovlm.synth.scene import PLACES

    phrase = phrase.strip().rstrip("?.")
    return next((p.name for p in PLACES if phrase in (p.at, p.to, p.from_)), None)


RULE_TYPES = ("count", "first_pickup", "last_pickup", "order", "overall", "where_ended")


def derived_citation(question: str, question_type: str, events: Sequence[Written]) -> list[int]:
    """The citation of an EgoSynth test question read off a description's events by the rule its
    salient moments follow (egovlm/synth/qa.py): first/last pick-up, the object's or place's events
    for a count, the two objects' first pick-ups (or the event and the next) for order, the object's
    last put-down for where-ended, every event for overall. An event the description lacks adds
    nothing; an unknown question form raises."""
    picks = [e for e in events if e.action == "pick_up"]
    frames: list[int] = []
    if question_type == "first_pickup":
        frames = [picks[0].frame] if picks else []
    elif question_type == "last_pickup":
        frames = [picks[-1].frame] if picks else []
    elif question_type == "overall":
        frames = [e.frame for e in events]
    elif question_type == "where_ended" and (m := re.search(r"did the (.+) end up", question)):
        puts = [e for e in events if e.action == "put_down" and e.obj == m.group(1)]
        frames = [puts[-1].frame] if puts else []
    elif question_type == "count" and (m := re.search(r"pick up the (.+)\?", question)):
        frames = [e.frame for e in picks if e.obj == m.group(1)]
    elif question_type == "count" and (m := re.search(r"put something down (.+)\?", question)):
        place = _place_name(m.group(1))
        frames = [e.frame for e in events if e.action == "put_down" and _place_name(e.place) == place]
    elif question_type == "count" and "pick something up" in question:
        frames = [e.frame for e in picks]
    elif question_type == "order" and (m := re.search(r"about the (.+) and the (.+) is true", question)):
        for name in m.groups():
            frames += [e.frame for e in picks if e.obj == name][:1]
    elif question_type == "order" and (m := re.search(r"right after picking up the (.+)\?", question)):
        i = next((i for i, e in enumerate(events) if e.action == "pick_up" and e.obj == m.group(1)), None)
        frames = [] if i is None else [e.frame for e in events[i : i + 2]]
    else:
        raise ValueError(f"no citation rule for a {question_type} question: {question!r}")
    return sorted(set(frames))


def placed_events(clip: Any, times: Sequence[float], rule: str, scores: Sequence[float] | None = None) -> str:
    """The truth's `events` description of a clip with each event at the first frame at or after it
    (``after``: all that the state of each frame tells), or (``motion``) at the frame that shows the
    hand's movement of that event (reach to lift, carry to release: EgoSynth's planned step) when
    exactly one does, else the first after (what a perceiver of each frame's motion phase could
    tell), or (``scores``) at whichever of the two frames around it (the last before, the first at
    or after) has the higher of ``scores`` (one per frame: what a perceiver that knows each frame's
    state and reads its motion with that score would write; experiments.mini.motion_probe's bound).
    At its nearest frame it is the `events` description itself (``describe``)."""
    from experiments.mini.pretrain_data import bracket, event_moments, planned_script

    if rule not in ("after", "motion", "scores"):
        raise ValueError(f"unknown rule {rule!r}: after, motion or scores")
    if (rule == "scores") != (scores is not None):
        raise ValueError("scores go with the rule 'scores', and only with it")
    if scores is not None and len(scores) != len(times):
        raise ValueError(f"{len(scores)} scores for {len(times)} frames")
    steps = planned_script(clip).steps if rule == "motion" else []
    lines = []
    for t, text in event_moments(clip):
        around = bracket(times, t)
        frame = around[-1]  # the first at or after (else the last)
        if rule == "motion":
            step = min(steps, key=lambda s: abs(s.t_event - t))  # captions round times to 0.1 s
            moving = [i + 1 for i, ft in enumerate(times) if step.t_move <= ft <= step.t_end]
            frame = moving[0] if len(moving) == 1 else frame
        elif scores is not None and len(around) == 2:
            frame = around[0] if scores[around[0] - 1] > scores[around[1] - 1] else around[1]
        lines.append(f"{text[:-1]} (frame {frame}).")
    return "\n".join(lines)


# How each true event fares in a written description (:func:`placement`).
PLACEMENTS = (
    "right",
    "other_of_bracket",
    "outside_bracket",
    "missed",
    "extra",
    "choice_right",
    "choice_asked",
)


def event_brackets(
    clip: Any, times: Sequence[float]
) -> dict[tuple[str, str, int], tuple[int, frozenset[int]]]:
    """Each true event of a clip, keyed (action, object, occurrence) as :func:`events_written` keys
    it, to its nearest frame and its bracket: the frames around it (the last before and the first at
    or after), one frame where it lies before the first or after the last. Which frame of the
    bracket is nearer is what only the motion tells; the bracket itself, what each frame's state tells."""
    from experiments.mini.pretrain_data import bracket, event_moments, nearest_position

    moments = [t for t, _ in event_moments(clip)]
    keys = events_written(placed_events(clip, times, "after"))  # each event at its first frame after
    if len(keys) != len(moments):
        raise ValueError(f"clip {clip.clip_id}: {len(moments)} events but {len(keys)} parse")
    out = {}
    for (action, obj, k, _after), t in zip(keys, moments, strict=True):
        out[action, obj, k] = (nearest_position(times, t), frozenset(bracket(times, t)))
    return out


def placement(
    brackets: dict[tuple[str, str, int], tuple[int, frozenset[int]]], written: str
) -> dict[str, int]:
    """Where a description puts each true event (``brackets``: :func:`event_brackets`): at its nearest
    frame (``right``), at the other frame of its bracket, outside its bracket, or not at all
    (``missed``); ``extra``: written events that match none. ``choice_asked``: events written inside
    a two-frame bracket, ``choice_right``: those at the nearer frame (the share of the motion choices
    made right, with the state right)."""
    wrote = {(a, n, k): f for a, n, k, f in events_written(written)}
    out = dict.fromkeys(PLACEMENTS, 0)
    for key, (nearest, around) in brackets.items():
        frame = wrote.pop(key, None)
        if frame is None:
            out["missed"] += 1
            continue
        out[
            "right" if frame == nearest else "other_of_bracket" if frame in around else "outside_bracket"
        ] += 1
        if len(around) == 2 and frame in around:
            out["choice_asked"] += 1
            out["choice_right"] += int(frame == nearest)
    out["extra"] = len(wrote)
    return out


def nearest_in_bracket(brackets: dict[tuple[str, str, int], tuple[int, frozenset[int]]], written: str) -> str:
    """The description with every event written inside its true bracket moved to the nearer frame,
    all else kept: what a perfect read of the motion would make of the model's own story (the events
    it missed, invented or put outside their bracket stay as written)."""
    seen: Counter[tuple[str, str]] = Counter()
    lines = []
    for line in written.splitlines():
        for e in written_events(line):
            seen[e.action, e.obj] += 1
            nearest, around = brackets.get((e.action, e.obj, seen[e.action, e.obj]), (0, frozenset()))
            if e.frame in around:
                line = _FRAME.sub(f"(frame {nearest})", line)
        lines.append(line)
    return "\n".join(lines)


def score(truth: str, written: str) -> dict[str, dict[str, int]]:
    """Per action: events in the truth, how many the model wrote, with the right frame, within one."""
    wrote = {(a, n, k): f for a, n, k, f in events_written(written)}
    out = {a: {"events": 0, "written": 0, "frame_right": 0, "within_one": 0} for a in ACTIONS}
    for action, name, k, frame in events_written(truth):
        row = out[action]
        row["events"] += 1
        got = wrote.get((action, name, k))
        if got is not None:
            row["written"] += 1
            row["frame_right"] += int(got == frame)
            row["within_one"] += int(abs(got - frame) <= 1)
    return out


def run(
    model_id: str,
    folder: Path,
    clips: int | None = None,
    frames: int = 8,
    max_new_tokens: int = 256,
    questions: Path | None = None,
    task: str = "events",
    samples: int = 0,
    temperature: float = 0.8,
) -> dict[str, Any]:
    """The probe over the first ``clips`` clips of an EgoSynth folder (all: None), or of the clips
    ``questions`` asks about (per clip rows and totals; with questions, the derived citations). With
    ``samples`` k > 0, also k descriptions per clip sampled at ``temperature`` (:func:`sampled_stories`)."""
    import torch

    from egovlm.train.eval import load_for_eval
    from egovlm.train.generation import greedy, sampled
    from experiments.mini.pretrain_data import Example, decode_frame_sets, describe, load_truth

    model, processor, size = load_for_eval(model_id, "cpu")
    rng = np.random.default_rng(0)  # decode_frame_sets draws only for jittered sets; the uniform one is fixed
    truth_clips = load_truth(folder)
    asked = read_jsonl(questions) if questions else []
    if asked:
        wanted = {str(q.meta["clip_id"]) for q in asked}
        truth_clips = [c for c in truth_clips if c.clip_id in wanted]
    per_clip = []
    totals = {a: Counter[str]() for a in ACTIONS}
    placed = Counter[str]()
    for clip in truth_clips[:clips]:
        shown = decode_frame_sets(clip, frames, 1, size, rng)[0]
        ex = Example(clip.clip_id, [(task, "events")], shown, "")
        truth = describe(clip, shown, task)
        images = [[f.pil() for f in shown]]
        text = greedy(model, processor, [ex.prompt()], images, max_new_tokens)[0]
        s = score(truth, text)
        for a in ACTIONS:
            totals[a].update(s[a])
        times = [f.timestamp_s for f in shown]
        where = placement(event_brackets(clip, times), text)
        placed.update(where)
        per_clip.append(
            {
                "clip_id": clip.clip_id,
                "times": times,
                "truth": truth,
                "written": text,
                "score": s,
                "placement": where,
            }
        )
        if samples:
            torch.manual_seed(len(per_clip))  # each clip's draw repeatable on its own
            per_clip[-1]["samples"] = sampled(
                model, processor, [ex.prompt()], images, max_new_tokens, samples, temperature
            )[0]
    out: dict[str, Any] = {
        "model": model_id,
        "data": str(folder),
        "clips": len(per_clip),
        "totals": {a: dict(totals[a]) for a in ACTIONS},
        "placement": {p: placed[p] for p in PLACEMENTS},
        "per_clip": per_clip,
    }
    if asked:
        by_id = {c.clip_id: c for c in truth_clips}
        out["derived"] = derived_scores(asked, per_clip, by_id)
        if samples:
            out["samples"] = {
                "k": samples,
                "temperature": temperature,
                **sampled_stories(asked, per_clip, by_id),
            }
    return out


def by_clip(questions: Sequence[QAItem]) -> dict[str, list[QAItem]]:
    """Questions grouped by the clip they ask about (``meta["clip_id"]``); a clip without any maps to []."""
    out: dict[str, list[QAItem]] = defaultdict(list)
    for q in questions:
        out[str(q.meta["clip_id"])].append(q)
    return out


def citation_f1_sum(scored: Sequence[tuple[QAItem, str, list[int]]], written: str) -> float:
    """Summed keyframe F1 of the citations derived from one description (``scored``: :func:`scoreable`)."""
    from egovlm.train.rewards import f1

    events = written_events(written)
    return sum(f1(derived_citation(q.question, qtype, events), salient) for q, qtype, salient in scored)


def sampled_stories(
    questions: Sequence[QAItem], per_clip: Sequence[dict[str, Any]], clips: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """The story's pass@k: each clip's greedy description (``written``) and its k sampled ones
    (``samples``), scored by the story reward (:class:`experiments.mini.story_rl.StoryReward`, defaults)
    and by the derived citations' keyframe F1 over the clip's questions. ``greedy`` and ``mean`` (over
    the samples) as they come; ``best``: per clip the sample the story reward ranks first (what GRPO on
    the story rewards), for derived F1 also ``best_derived`` (the sample whose citations score best).
    Story scores are means over clips, derived F1 over all questions."""
    from experiments.mini.story_rl import StoryReward

    reward = StoryReward()
    story = {"greedy": 0.0, "mean": 0.0, "best": 0.0}
    derived = {"greedy": 0.0, "mean": 0.0, "best": 0.0, "best_derived": 0.0}
    asked = by_clip(questions)
    total = 0
    for row in per_clip:
        brackets = event_brackets(clips[row["clip_id"]], row["times"])
        scored = scoreable(asked[row["clip_id"]], row["times"])
        total += len(scored)
        stories = [reward.score(brackets, t) for t in row["samples"]]
        sums = [citation_f1_sum(scored, t) for t in row["samples"]]
        greedy_sum = citation_f1_sum(scored, row["written"])
        story["greedy"] += reward.score(brackets, row["written"])
        story["mean"] += sum(stories) / len(stories)
        story["best"] += max(stories)
        derived["greedy"] += greedy_sum
        derived["mean"] += sum(sums) / len(sums)
        derived["best"] += sums[stories.index(max(stories))]
        derived["best_derived"] += max(sums)
    return {
        "story": {k: v / len(per_clip) for k, v in story.items()},
        "derived": {k: v / max(1, total) for k, v in derived.items()},
    }


SOURCES = ("model", "model_nearest_in_bracket", "truth_nearest", "truth_after", "truth_motion")


def scoreable(
    questions: Sequence[QAItem], times: Sequence[float], skipped: Counter[str] | None = None
) -> list[tuple[QAItem, str, list[int]]]:
    """A clip's questions a citation can be derived for and scored: (question, type, salient frames);
    those whose moments no frame shows are left out, and those of types outside :data:`RULE_TYPES`
    (counted in ``skipped``)."""
    from egovlm.train.rewards import salient_frame_indices

    out = []
    for q in questions:
        salient = salient_frame_indices(times, q.salient_times, None)
        if not salient:
            continue
        qtype = str(q.question_type)
        if qtype not in RULE_TYPES:
            if skipped is not None:
                skipped[qtype] += 1
            continue
        out.append((q, qtype, salient))
    return out


def derived_scores(
    questions: Sequence[QAItem], per_clip: Sequence[dict[str, Any]], clips: dict[str, Any]
) -> dict[str, Any]:
    """Per question type: keyframe F1 of the citations derived from the model's description (each
    ``per_clip`` row's ``written``; ``truth`` is the clip's own `events` description), from the same
    with its events inside their true bracket at the nearer frame (:func:`nearest_in_bracket`), from the
    truth's events at their nearest frames, at the first frame after and at the frame of the motion,
    and the best fixed set of positions on the same questions (questions whose moments no frame shows,
    and types outside :data:`RULE_TYPES`, are left out)."""
    from egovlm.train.eval import best_fixed_set
    from egovlm.train.rewards import f1

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    skipped: Counter[str] = Counter()  # question types no rule covers (never_touched)
    asked = by_clip(questions)
    for row in per_clip:
        clip, times = clips[row["clip_id"]], row["times"]
        written = {
            "model": written_events(row["written"]),
            "model_nearest_in_bracket": written_events(
                nearest_in_bracket(event_brackets(clip, times), row["written"])
            ),
            "truth_nearest": written_events(row["truth"]),  # the `events` description: nearest frames
            "truth_after": written_events(placed_events(clip, times, "after")),
            "truth_motion": written_events(placed_events(clip, times, "motion")),
        }
        for q, qtype, salient in scoreable(asked[row["clip_id"]], times, skipped):
            scored = {k: f1(derived_citation(q.question, qtype, ev), salient) for k, ev in written.items()}
            groups[qtype].append({"salient": salient, **scored})
    summary: dict[str, dict[str, Any]] = {}
    for qtype, rows in [*sorted(groups.items()), ("all", [r for t in sorted(groups) for r in groups[t]])]:
        if qtype == "all":  # the best fixed set per type, weighted by the type's questions
            fixed = sum(summary[t]["best_fixed_set"] * summary[t]["questions"] for t in summary) / len(rows)
            positions: list[int] = []
        else:
            total, chosen = best_fixed_set([r["salient"] for r in rows], len(per_clip[0]["times"]))
            fixed, positions = total / len(rows), list(chosen)
        summary[qtype] = {
            "questions": len(rows),
            **{k: sum(r[k] for r in rows) / len(rows) for k in SOURCES},
            "best_fixed_set": fixed,
            "positions": positions,
        }
    if skipped:
        summary["all"]["skipped"] = dict(skipped)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument(
        "--data", type=Path, required=True, help="an EgoSynth folder (clips.jsonl, captions, videos)"
    )
    ap.add_argument("--clips", type=int, default=None, help="the first N clips (default: all)")
    ap.add_argument(
        "--questions", type=Path, default=None, help="questions about the clips: derive their citations"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--task", default="events", help="the description task asked: events, events_named or events_scan"
    )
    ap.add_argument(
        "--samples", type=int, default=0, help="with --questions: k sampled descriptions per clip (pass@k)"
    )
    ap.add_argument("--temperature", type=float, default=0.8, help="for --samples (GRPO's rollouts: 0.8)")
    args = ap.parse_args()
    if args.samples and not args.questions:
        ap.error("--samples needs --questions (the sampled stories are scored by their derived citations)")
    result = run(
        args.model,
        args.data,
        args.clips,
        questions=args.questions,
        task=args.task,
        samples=args.samples,
        temperature=args.temperature,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "events_probe.json", json.dumps(result, indent=2) + "\n")
    for action, t in result["totals"].items():
        print(
            f"{action:8s} events {t.get('events', 0):3d}  written {t.get('written', 0):3d}  "
            f"frame right {t.get('frame_right', 0):3d}  within one {t.get('within_one', 0):3d}"
        )
    p = result["placement"]
    print(
        f"true events: at the nearest frame {p['right']}, the other frame of the bracket "
        f"{p['other_of_bracket']}, outside it {p['outside_bracket']}, missed {p['missed']}; "
        f"extra written {p['extra']}; two-frame choices right {p['choice_right']} of {p['choice_asked']}"
    )
    if "derived" in result:
        print(
            "keyframe F1 of citations derived from: the model's events | the same, nearer frame of the "
            "bracket | truth, nearest | truth, first frame after | truth, frame of the motion"
        )
        for qtype, row in result["derived"].items():
            print(
                f"{qtype:13s} {row['questions']:4d}  {row['model']:.3f} | "
                f"{row['model_nearest_in_bracket']:.3f} | {row['truth_nearest']:.3f} | "
                f"{row['truth_after']:.3f} | {row['truth_motion']:.3f}   "
                f"best fixed set {row['best_fixed_set']:.3f} {row['positions']}"
            )
    if "samples" in result:
        sm = result["samples"]
        st, dv = sm["story"], sm["derived"]
        print(
            f"{sm['k']} samples at temperature {sm['temperature']}: story reward greedy {st['greedy']:.3f}, "
            f"mean {st['mean']:.3f}, best {st['best']:.3f}; derived F1 greedy {dv['greedy']:.3f}, mean "
            f"{dv['mean']:.3f}, of the best story {dv['best']:.3f}, best {dv['best_derived']:.3f}"
        )


if __name__ == "__main__":
    main()
