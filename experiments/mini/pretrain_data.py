"""Descriptions of EgoSynth frame sets, and the clip ground truth every base-stage example is written from.

:func:`load_truth` reads an EgoSynth folder's exact ground truth (``captions.jsonl``,
``events.jsonl``, ``clips.jsonl``); :func:`decode_frame_sets` decodes a clip's frame sets the way
the QA prompts sample them (the uniform set) plus jittered ones (one random time inside each
segment, like the edge buffer's irregular keyframe times), resized to the model's keyframe size.

The descriptions (:func:`describe`) are the minority part of the base stage's data
(:mod:`experiments.mini.base_data`): what each hand holds in each frame, which objects are visible,
which object is picked up or put down where and when (with the nearest prompt frame), which frames
show such a moment, where the objects are at the start and at the end. They carry dense reading
supervision, and ``event_frames`` teaches citing frames. Their prompt asks for one to three
descriptions, each inside a pair of tags it names, drawn at random from :data:`WRAP_TAGS` (single
tokens added by :func:`add_wrap_tokens`), and never uses the answer grammar's tags. Frames reach the
model in the contract's layout (``Frame 3 (t=12.4 s): <image>``).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.contract import Message, frame_content
from egovlm.frames import Frame, resize_for_model
from egovlm.video import VideoReader, uniform_times

SYSTEM_INTRO = "You watch keyframes from a head-mounted camera and describe what they show."
REQUEST = "Describe these frames."

# description task -> how the instructions name it
TASKS: dict[str, str] = {
    "visible": "the objects visible in each frame",
    "hands": "what each hand holds in each frame",
    "events": "when each object is picked up or put down, with the nearest frame",
    "event_frames": "the numbers of the frames nearest to a pick-up or put-down",
    "scene": "where the objects are at the start and at the end",
    "moved": "the objects that are picked up, in the order of their first pick-up",
    "first_held": "the number of the first frame in which a hand holds an object",
    "motion": "what each hand is doing in each frame",
    "events_named": "each pick-up and put-down as it happens, then its nearest frame",
    "events_scan": "what is picked up or put down between each two frames, with the nearer frame",
}
# Wrapper tag names; none is a tag of the answer grammar (think, keyframes, answer).
WRAP_TAGS: tuple[str, ...] = (
    "hands",
    "events",
    "scene",
    "frames",
    "objects",
    "places",
    "moves",
    "list",
    "notes",
    "summary",
    "timeline",
    "items",
    "record",
    "report",
    "log",
    "desc",
    "start",
    "end",
    "story",
    "facts",
    "view",
    "moments",
    "state",
    "what",
)
MAX_BLOCKS = 3


def wrap_tokens() -> list[str]:
    return [t for name in WRAP_TAGS for t in (f"<{name}>", f"</{name}>")]


def add_wrap_tokens(tokenizer: Any) -> int:
    """Add the wrapper tags as single (non-special) tokens; returns how many were new."""
    return int(tokenizer.add_tokens(wrap_tokens()))


def task_phrase(task: str) -> str:
    """How the instructions name a task."""
    if task not in TASKS:
        raise PretrainDataError(f"unknown description task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


def instructions(blocks: Sequence[tuple[str, str]]) -> str:
    """``Write A inside <a></a>, then B inside <b></b>.`` for (task, tag) blocks."""
    parts = [f"{task_phrase(task)} inside <{tag}></{tag}>" for task, tag in blocks]
    return f"{SYSTEM_INTRO} Write " + ", then ".join(parts) + "."


class PretrainDataError(ValueError):
    """An EgoSynth folder that cannot be turned into pre-training examples (names file and row)."""


@dataclass(frozen=True)
class ClipTruth:
    """What the descriptions are written from: one clip's ground-truth rows."""

    clip_id: str
    video: Path
    duration_s: float
    captions: list[dict[str, Any]]  # captions.jsonl entries {start, end, text}
    events: list[dict[str, Any]]  # events.jsonl rows of this clip, in time order
    render: tuple[str, int, int, tuple[int, int], float] | None = None  # split, seed, index, size, fps


@dataclass
class Example:
    """One frame set and a request for one to three wrapped descriptions (``blocks``: task, tag)."""

    clip_id: str
    blocks: list[tuple[str, str]]
    frames: list[Frame]
    target: str

    def prompt(self) -> list[Message]:
        user = [*frame_content(self.frames), {"type": "text", "text": REQUEST}]
        return [
            {"role": "system", "content": [{"type": "text", "text": instructions(self.blocks)}]},
            {"role": "user", "content": user},
        ]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise PretrainDataError(f"{path} not found (an EgoSynth folder: egovlm data synth --out ...)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise PretrainDataError(f"{path}:{n}: not valid JSON: {e}") from None
    return rows


def load_truth(folder: Path) -> list[ClipTruth]:
    """The clips of an EgoSynth folder with their captions, events and how they were rendered."""
    events: dict[str, list[dict[str, Any]]] = {}
    for n, e in enumerate(_read_rows(folder / "events.jsonl"), 1):
        try:
            events.setdefault(str(e["clip_id"]), []).append(e)
        except KeyError:
            raise PretrainDataError(f"{folder / 'events.jsonl'}:{n}: missing field clip_id") from None
    looks = {str(r.get("id")): r for r in _read_rows(folder / "clips.jsonl")}
    clips = []
    for n, row in enumerate(_read_rows(folder / "captions.jsonl"), 1):
        try:
            cid, video, duration, caps = row["id"], row["video"], row["duration_s"], row["captions"]
            look, meta = looks.get(cid), row["meta"]
            render = None
            if look is not None:
                size = (int(look["size"][0]), int(look["size"][1]))
                render = (str(meta["split"]), int(meta["seed"]), int(meta["index"]), size, float(look["fps"]))
        except KeyError as e:
            raise PretrainDataError(f"{folder / 'captions.jsonl'}:{n}: missing field {e.args[0]}") from None
        evs = sorted(events.get(cid, []), key=lambda e: float(e["t"]))
        clips.append(ClipTruth(cid, folder / video, float(duration), list(caps), evs, render))
    return clips


@functools.lru_cache(maxsize=4)
def planned_clip(
    split: str, seed: int, index: int, size: tuple[int, int], fps: float, duration: float
) -> Any:
    from egovlm.synth.generate import SynthConfig, build_clip

    return build_clip(split, seed, index, SynthConfig(size=size, fps=fps, duration=duration))


def planned_script(clip: ClipTruth) -> Any:
    """The clip's script as EgoSynth's planner wrote it, re-planned from the clip's seed (nothing is
    drawn): its objects, events and hand movements (``steps``: when each pick's reach starts and
    lift ends, each place's carry starts and release ends)."""
    if clip.render is None:
        raise PretrainDataError(f"{clip.clip_id}: no clips.jsonl row, so the clip's script is unknown")
    return planned_clip(*clip.render, clip.duration_s).script


def visible_objects(clip: ClipTruth, t: float, min_px: int = 4) -> list[str]:
    """Objects whose box (resting or held) lies at least ``min_px`` x ``min_px`` inside the frame
    at ``t``, from EgoSynth's renderer (re-planned from the clip's seed; nothing is drawn)."""
    if clip.render is None:
        raise PretrainDataError(f"{clip.clip_id}: no clips.jsonl row, so visibility is unknown")
    planned = planned_clip(*clip.render, clip.duration_s)
    out = []
    for obj in planned.script.objects:
        x0, y0, x1, y1 = planned.renderer.object_box(obj.name, t)
        if x1 - x0 >= min_px and y1 - y0 >= min_px:
            out.append(obj.name)
    return out


def resting_at(script: Any, t: float) -> dict[str, str]:
    """Object name -> the place it rests in at ``t`` (EgoSynth's place names: "shelf",
    "table_left"), for every object of a planned script that no hand holds."""
    return {script.objects[r.obj].name: r.place for r in script.resting_at(t)}


def resting_places(clip: ClipTruth, t: float, min_px: int = 4) -> dict[str, str]:
    """:func:`resting_at` for the objects :func:`visible_objects` sees (re-planned, nothing drawn)."""
    if clip.render is None:
        raise PretrainDataError(f"{clip.clip_id}: no clips.jsonl row, so places are unknown")
    seen = set(visible_objects(clip, t, min_px))
    rest = resting_at(planned_clip(*clip.render, clip.duration_s).script, t)
    return {name: place for name, place in rest.items() if name in seen}


def clip_places(clip: ClipTruth) -> set[str]:
    """The places the clip's events happen at: the wrong options where-questions prefer."""
    return {str(e["place"]) for e in clip.events}


def visible_line(clip: ClipTruth, frame: Frame) -> str:
    names = [f"the {n}" for n in visible_objects(clip, frame.timestamp_s)]
    return f"Frame {frame.index}: " + (" and ".join(names) if names else "no object") + "."


def frame_times(duration_s: float, n: int, rng: np.random.Generator | None) -> list[float]:
    """Uniform segment centres (``rng`` None: the QA prompts' times) or one jittered time per segment."""
    if rng is None:
        return uniform_times(duration_s, n)
    seg = duration_s / n
    return [seg * (i + float(rng.uniform(0.1, 0.9))) for i in range(n)]


def nearest_position(times: Sequence[float], t: float) -> int:
    """1-based position of the time nearest ``t`` (the earlier on a tie): the frame a moment is cited by."""
    return min(range(len(times)), key=lambda i: (abs(times[i] - t), i)) + 1


def frames_before(times: Sequence[float], t: float) -> int:
    """How many of the (sorted) frame times lie before ``t``: a moment's bracket is the last frame before
    it and the first at or after it (a frame at ``t`` itself already shows what happened then)."""
    return sum(1 for ft in times if ft < t - 1e-9)


def bracket(times: Sequence[float], t: float) -> tuple[int, ...]:
    """The frames (1-based, in order) around a moment: the last before it and the first at or after
    it; one frame where the moment lies before the first frame or after the last."""
    before = frames_before(times, t)
    return tuple(f for f in (before, before + 1) if 1 <= f <= len(times))


def nearest_frame(frames: Sequence[Frame], t: float) -> int:
    """Index of the frame nearest ``t`` (frames in order, as every frame set is)."""
    return frames[nearest_position([f.timestamp_s for f in frames], t) - 1].index


def held_at(events: Sequence[dict[str, Any]], t: float) -> dict[str, str]:
    """hand -> object it holds at time ``t`` (picked up at or before t and not yet put down)."""
    held: dict[str, str] = {}
    for e in events:
        if float(e["t"]) > t + 1e-6:
            break
        if e["action"] == "pick_up":
            held[e["hand"]] = e["object"]
        elif held.get(e["hand"]) == e["object"]:
            del held[e["hand"]]
    return held


def hands_line(frame: Frame, events: Sequence[dict[str, Any]]) -> str:
    held = held_at(events, frame.timestamp_s)
    if not held:
        return f"Frame {frame.index}: nothing in hand."
    parts = [f"the {h} hand holds the {held[h]}" for h in ("right", "left") if h in held]
    return f"Frame {frame.index}: " + " and ".join(parts) + "."


def motion_line(clip: ClipTruth, frame: Frame) -> str:
    """What each hand is doing in one frame: reaching for or lifting an object (a pick-up's motion,
    before and after the grasp), lowering or letting go of one (a put-down's), or holding it. The
    frame nearest an event usually shows its motion (docs/mini_experiment/LOG.md, "What a
    citation must see"), which the held state of the `hands` task does not tell."""
    script = planned_script(clip)
    t = frame.timestamp_s
    held = held_at(clip.events, t)
    parts = []
    for hand in ("right", "left"):
        step = next((s for s in script.steps if s.hand == hand and s.t_move <= t <= s.t_end), None)
        if step is not None:
            name = script.objects[step.obj].name
            before = t < step.t_event
            if step.kind == "pick":
                parts.append(f"the {hand} hand {'reaches for' if before else 'lifts'} the {name}")
            else:
                parts.append(f"the {hand} hand {'lowers' if before else 'lets go of'} the {name}")
        elif hand in held:
            parts.append(f"the {hand} hand holds the {held[hand]}")
    return (
        f"Frame {frame.index}: " + (" and ".join(parts) if parts else "the hands are still and empty") + "."
    )


_TIME_PREFIX = re.compile(r"^At [0-9.]+ s the ")  # an event caption's start: "At 3.7 s the right hand ..."


def _is_event_sentence(text: str) -> bool:
    return " picks up " in text or " puts the " in text


def event_moments(clip: ClipTruth) -> list[tuple[float, str]]:
    """(time, caption sentence) of every pick-up and put-down inside the clip."""
    out = []
    for c in clip.captions:
        start, text = float(c["start"]), str(c["text"])
        if 0.0 < start < clip.duration_s and _is_event_sentence(text):
            out.append((start, text))
    return out


def _layout(clip: ClipTruth) -> str:
    return next((str(c["text"]) for c in clip.captions if str(c["text"]).startswith("At the start,")), "")


def _summary(clip: ClipTruth) -> str:
    return next((str(c["text"]) for c in clip.captions if str(c["text"]).startswith("By ")), "")


def describe(clip: ClipTruth, frames: Sequence[Frame], task: str) -> str:
    """The description ``task`` (a key of :data:`TASKS`) of this frame set."""
    if task == "visible":
        return "\n".join(visible_line(clip, f) for f in frames)
    if task == "hands":
        return "\n".join(hands_line(f, clip.events) for f in frames)
    if task == "motion":
        return "\n".join(motion_line(clip, f) for f in frames)
    if task in ("events", "events_named"):
        lines = []
        for t, text in event_moments(clip):
            if task == "events_named":  # the event first, its frame after it, no time to guess before it
                text = _TIME_PREFIX.sub("The ", text)
            lines.append(f"{text[:-1]} (frame {nearest_frame(frames, t)}).")
        return "\n".join(lines) or "Nothing is picked up or put down."
    if task == "events_scan":
        return "\n".join(scan_lines(clip, frames))
    if task == "event_frames":
        near = sorted({nearest_frame(frames, t) for t, _ in event_moments(clip)})
        return ", ".join(str(i) for i in near) or "none"
    if task == "scene":
        return "\n".join(x for x in (_layout(clip), _summary(clip)) if x)
    if task == "moved":
        names = list(dict.fromkeys(str(e["object"]) for e in clip.events if e["action"] == "pick_up"))
        return ", ".join(f"the {n}" for n in names) or "none"
    if task == "first_held":
        return next((str(f.index) for f in frames if held_at(clip.events, f.timestamp_s)), "none")
    raise PretrainDataError(f"unknown description task {task!r}; choose one of {', '.join(TASKS)}")


def scan_lines(clip: ClipTruth, frames: Sequence[Frame]) -> list[str]:
    """The `events_scan` description: one line per gap between consecutive frames (and before the
    first, after the last), in order, each the events inside that gap with their nearer frame, or
    "nothing". Unlike `events`, which writes each event after guessing its time, every gap gets its
    own decision from the two frames around it (LOG.md, "A story read gap by gap")."""
    times = [f.timestamp_s for f in frames]
    gaps = [f"Before frame {frames[0].index}"]
    gaps += [f"Frames {a.index}-{b.index}" for a, b in itertools.pairwise(frames)]
    gaps.append(f"After frame {frames[-1].index}")
    inside: list[list[str]] = [[] for _ in gaps]
    for t, text in event_moments(clip):
        what = _TIME_PREFIX.sub("the ", text)[:-1]
        inside[frames_before(times, t)].append(f"{what} (frame {nearest_frame(frames, t)}).")
    return [f"{g}: {e}" for g, events in zip(gaps, inside, strict=True) for e in events or ["nothing."]]


def target_text(clip: ClipTruth, frames: Sequence[Frame], blocks: Sequence[tuple[str, str]]) -> str:
    """Each block's description inside its tags, in the order the instructions ask."""
    return "\n".join(f"<{tag}>{describe(clip, frames, task)}</{tag}>" for task, tag in blocks)


def draw_blocks(rng: np.random.Generator, tasks: Sequence[str]) -> list[tuple[str, str]]:
    """One to MAX_BLOCKS distinct tasks in random order, each with a distinct random tag."""
    k = int(rng.integers(1, min(MAX_BLOCKS, len(tasks)) + 1))
    chosen = [tasks[int(i)] for i in rng.permutation(len(tasks))[:k]]
    tags = [WRAP_TAGS[int(i)] for i in rng.permutation(len(WRAP_TAGS))[:k]]
    return list(zip(chosen, tags, strict=True))


def decode_frame_sets(
    clip: ClipTruth, n: int, sets: int, size: tuple[int, int], rng: np.random.Generator
) -> list[list[Frame]]:
    """``sets`` frame sets of ``n`` frames (the first uniform, the others jittered), one decode pass."""
    reader = VideoReader(clip.video)
    wanted = [frame_times(clip.duration_s, n, None if k == 0 else rng) for k in range(sets)]
    flat = reader.frames_at([t for times in wanted for t in times])
    out = []
    for k in range(sets):
        timed = sorted(flat[k * n : (k + 1) * n], key=lambda x: x[0])
        out.append([Frame(i + 1, float(t), resize_for_model(img, size)) for i, (t, img) in enumerate(timed)])
    return out
