"""A faithful plain-text narration of a clip, with object names, places and timestamps.

Written for pre-training a small model on descriptions of EgoSynth clips (never on the QA): every
sentence is generated from the script's own state (steps, events, head moves, idle stretches),
so it says only what happens in the frames, at the time it happens.
"""

from __future__ import annotations

from typing import Any

from egovlm.synth.scene import PLACE_BY_NAME, PLACES
from egovlm.synth.script import Script

SETTING = (
    "A head-mounted camera looks down at a wooden table below a wall shelf; to the right is a counter "
    "with a sink and an open drawer."
)


def _s(t: float) -> str:
    return f"{t:.1f} s"


def _layout_sentence(script: Script) -> str:
    parts = []
    for place in PLACES:
        names = [f"the {o.name}" for o in script.objects if o.place == place.name]
        if names:
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            parts.append(f"{listed} {'is' if len(names) == 1 else 'are'} {place.at}")
    return "At the start, " + "; ".join(parts) + "."


def caption_entries(script: Script, duration: float) -> list[dict[str, Any]]:
    """Time-stamped sentences, in time order: ``{"start", "end", "text"}`` (seconds)."""
    entries: list[dict[str, Any]] = [
        {"start": 0.0, "end": 0.0, "text": SETTING},
        {"start": 0.0, "end": 0.0, "text": _layout_sentence(script)},
    ]
    for step in script.steps:
        if step.t_event > duration:
            continue
        obj = script.objects[step.obj].name
        place = PLACE_BY_NAME[step.place]
        if step.kind == "pick":
            entries.append(
                {
                    "start": step.t_move,
                    "end": step.t_contact,
                    "text": f"At {_s(step.t_move)} the {step.hand} hand reaches for the {obj} {place.at}.",
                }
            )
            entries.append(
                {
                    "start": step.t_event,
                    "end": step.t_end,
                    "text": f"At {_s(step.t_event)} the {step.hand} hand picks up the {obj} {place.from_}.",
                }
            )
        else:
            entries.append(
                {
                    "start": step.t_event,
                    "end": step.t_settle,
                    "text": f"At {_s(step.t_event)} the {step.hand} hand puts the {obj} down {place.to}.",
                }
            )
    for move in script.head.moves:
        if move.t0 > duration:
            continue
        if move.walking:
            where = (
                "to the counter"
                if PLACE_BY_NAME.get(move.target) and PLACE_BY_NAME[move.target].station == "counter"
                else "back to the table"
            )
            entries.append(
                {"start": move.t0, "end": move.t1, "text": f"At {_s(move.t0)} the wearer walks {where}."}
            )
        elif move.target == "window":
            entries.append(
                {
                    "start": move.t0,
                    "end": move.t1,
                    "text": f"At {_s(move.t0)} the wearer glances up at the window.",
                }
            )
        elif move.quick and move.target in PLACE_BY_NAME:
            label = PLACE_BY_NAME[move.target].label
            entries.append(
                {
                    "start": move.t0,
                    "end": move.t1,
                    "text": f"At {_s(move.t0)} the wearer quickly turns their head towards the {label}.",
                }
            )
    for t0, t1 in script.idle:
        if t1 - t0 >= 1.5 and t0 < duration:
            entries.append(
                {
                    "start": t0,
                    "end": t1,
                    "text": f"From {_s(t0)} to {_s(min(t1, duration))} nothing is picked up or put down; "
                    "the wearer only looks around.",
                }
            )
    entries.sort(key=lambda e: (e["start"], e["end"]))
    entries.append({"start": duration, "end": duration, "text": _final_sentence(script, duration)})
    return [{"start": round(e["start"], 3), "end": round(e["end"], 3), "text": e["text"]} for e in entries]


def _final_sentence(script: Script, duration: float) -> str:
    moved = sorted({e.object for e in script.events})
    if not moved:
        return f"By {_s(duration)} nothing has been moved."
    parts = [
        f"the {name} is {PLACE_BY_NAME[script.final_place(script.obj_by_name(name).id)].at}" for name in moved
    ]
    untouched = [o.name for o in script.objects if o.name not in moved]
    tail = ""
    if untouched:
        tail = (
            " The "
            + " and the ".join(untouched)
            + (" was" if len(untouched) == 1 else " were")
            + " never touched."
        )
    return f"By {_s(duration)} " + "; ".join(parts) + "." + tail


def narration(entries: list[dict[str, Any]]) -> str:
    return " ".join(e["text"] for e in entries)
