"""The script of a clip: what the wearer does, when, with which hand, and where each object goes.

A :class:`Planner` writes the script ahead of the renderer: an activity (tidying the table onto
the shelf, clearing it into the sink, ...) decides which objects move where; each move is a *pick*
step (head turns, hand reaches, fingers close, object lifted to the body) and a *place* step (head
turns or the wearer walks, hand carries, lowers, releases, retracts). Both hands can hold
something at once. Idle stretches, where nothing is touched and the head only wanders, separate
steps. All step times sit on the frame grid, so an event's time is exactly a frame's timestamp.

The same planner serves finite clips (``plan_until`` with a hard end: every held object is put
down before the end) and the endless live source (extended in chunks, switching activity when
the current one runs out of objects).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from egovlm.synth.camera import HeadPath, View
from egovlm.synth.hands import HOLD
from egovlm.synth.objects import ObjectKind, choose_kinds
from egovlm.synth.scene import PLACE_BY_NAME, STATION_VIEW, TABLE_PLACES, WINDOW, Layout, slot_centre

HANDS = ("right", "left")


@dataclass(frozen=True)
class Activity:
    """What the wearer is doing overall; ``description`` is the answer text of the overall question."""

    name: str
    description: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    repeat: bool = False  # may an object be handled again
    put_back: bool = False  # objects go back where they came from


ACTIVITIES: tuple[Activity, ...] = (
    Activity(
        "tidy_shelf", "tidying up by moving things from the table onto the shelf", TABLE_PLACES, ("shelf",)
    ),
    Activity("clear_sink", "clearing things off the table into the sink", TABLE_PLACES, ("sink",)),
    Activity("drawer", "putting things from the table away in the drawer", TABLE_PLACES, ("drawer",)),
    Activity(
        "rearrange",
        "rearranging objects between places on the table",
        TABLE_PLACES,
        TABLE_PLACES,
        repeat=True,
    ),
    Activity(
        "inspect",
        "picking objects up to look at them and putting them back where they were",
        (*TABLE_PLACES, "shelf"),
        (),
        repeat=True,
        put_back=True,
    ),
    Activity(
        "set_table",
        "taking things from the shelf and the drawer and setting them on the table",
        ("shelf", "drawer"),
        TABLE_PLACES,
    ),
    Activity(
        "empty_sink", "taking things out of the sink and putting them on the table", ("sink",), TABLE_PLACES
    ),
)
ACTIVITY_BY_NAME: dict[str, Activity] = {a.name: a for a in ACTIVITIES}


@dataclass
class SceneObject:
    id: int
    kind: ObjectKind
    place: str  # initial place
    slot: int

    @property
    def name(self) -> str:
        return self.kind.name


@dataclass(frozen=True)
class Event:
    """One ground-truth event; ``t`` is exactly ``frame / fps``."""

    index: int
    t: float
    frame: int
    action: str  # "pick_up" | "put_down"
    object: str
    place: str
    hand: str
    start_t: float  # the step this event belongs to (head turn .. hand settled)
    end_t: float
    salient_frames: tuple[int, ...]  # contact, event moment, motion settled

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "t": self.t,
            "frame": self.frame,
            "action": self.action,
            "object": self.object,
            "place": self.place,
            "hand": self.hand,
            "start_t": self.start_t,
            "end_t": self.end_t,
            "salient_frames": list(self.salient_frames),
        }


@dataclass(frozen=True)
class Step:
    """One hand movement. Pick: move->contact reach, contact->event close, event->end lift to hold.
    Place: move->contact carry, contact->event lower, event->settle open, settle->end retract."""

    kind: str
    hand: str
    obj: int
    place: str
    slot: int
    pos: tuple[float, float]  # the object's centre at the source (pick) or destination (place)
    t0: float
    t_move: float
    t_contact: float
    t_event: float
    t_settle: float
    t_end: float
    hold: tuple[float, float]  # camera-relative hold anchor while carrying
    hold_scale: float


@dataclass(frozen=True)
class Rest:
    """An object resting at ``pos`` in ``place`` from ``t0`` until ``t1`` (inf: still there)."""

    obj: int
    place: str
    slot: int
    pos: tuple[float, float]
    t0: float
    t1: float


@dataclass
class Script:
    """Everything that happens in a clip; the renderer, captions and QA all read it."""

    fps: float
    objects: list[SceneObject]
    activity: Activity
    head: HeadPath
    steps: list[Step] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    rests: list[Rest] = field(default_factory=list)
    idle: list[tuple[float, float]] = field(default_factory=list)  # stretches where nothing is touched
    activities: list[tuple[float, str]] = field(default_factory=list)  # (start time, activity name)
    never_touch: set[int] = field(default_factory=set)

    def frame_of(self, t: float) -> int:
        return round(t * self.fps)

    def obj_by_name(self, name: str) -> SceneObject:
        return next(o for o in self.objects if o.name == name)

    def resting_at(self, t: float) -> list[Rest]:
        return [r for r in self.rests if r.t0 <= t < r.t1]

    def final_place(self, obj: int) -> str:
        return max((r for r in self.rests if r.obj == obj), key=lambda r: r.t0).place

    def prune(self, before: float) -> None:
        """Drop finished history (live mode): steps, rests and idle stretches that ended before."""
        self.steps = [s for s in self.steps if s.t_end >= before]
        self.rests = [r for r in self.rests if r.t1 >= before]
        self.idle = [i for i in self.idle if i[1] >= before]
        self.events = [e for e in self.events if e.end_t >= before]
        self.head.prune(before)


def _q(t: float, fps: float) -> float:
    """Snap a time to the frame grid."""
    return round(t * fps) / fps


class Planner:
    """Writes a :class:`Script` step by step from a seeded generator (see the module docstring)."""

    def __init__(
        self,
        rng: np.random.Generator,
        fps: float,
        *,
        n_objects: int | None = None,
        activity: str | None = None,
        head_motion: bool = True,
        head_rng: np.random.Generator | None = None,
    ) -> None:
        self.rng = rng
        self.decide = np.random.default_rng(rng.integers(1 << 62))
        self.fps = fps
        act = ACTIVITY_BY_NAME[activity] if activity else ACTIVITIES[int(rng.integers(len(ACTIVITIES)))]
        n = int(n_objects if n_objects is not None else rng.integers(4, 8))
        n = max(4, min(7, n))
        kinds = choose_kinds(rng, n)
        self.layout = Layout()
        objects = self._initial_objects(kinds, act)
        sx, sy, sz = STATION_VIEW["table"]
        head = HeadPath((sx, sy, sz), head_rng if head_rng is not None else rng, moving=head_motion)
        self.script = Script(fps, objects, act, head)
        self.script.activities.append((0.0, act.name))
        reserve = 1 if n <= 5 else int(rng.integers(1, 3))
        order = rng.permutation(n)
        self.script.never_touch = {int(i) for i in order[:reserve]}
        self.held: dict[str, int | None] = {h: None for h in HANDS}
        self.hand_free_at: dict[str, float] = {h: 0.0 for h in HANDS}
        self.obj_place: dict[int, tuple[str, int, tuple[float, float]]] = {}
        self.handled: set[int] = set()
        for o in objects:
            pos = slot_centre(PLACE_BY_NAME[o.place], o.slot, o.kind)
            self.obj_place[o.id] = (o.place, o.slot, pos)
            self.script.rests.append(Rest(o.id, o.place, o.slot, pos, 0.0, math.inf))
        self.t = _q(float(rng.uniform(0.4, 1.2)), fps)
        self.station = "table"
        self._picked_from: dict[int, tuple[str, int]] = {}
        self.event_count = 0
        self.activity_picks = 0  # pick-ups in the current activity (live mode switches after a few)
        self.episode_picks = int(self.decide.integers(3, 8))

    # -- scene setup -------------------------------------------------------------------------
    def _initial_objects(self, kinds: list[ObjectKind], act: Activity) -> list[SceneObject]:
        """Most objects start at the activity's sources, the rest on the table."""
        objects = []
        for i, kind in enumerate(kinds):
            pool = act.sources if self.rng.random() < 0.8 else TABLE_PLACES
            place = self._free_place(list(pool)) or self._free_place(list(TABLE_PLACES))
            assert place is not None
            free = self.layout.free_slots(place)
            slot = int(free[int(self.rng.integers(len(free)))])
            self.layout.occupied[(place, slot)] = i
            objects.append(SceneObject(i, kind, place, slot))
        return objects

    def _free_place(self, pool: list[str]) -> str | None:
        pool = [p for p in pool if self.layout.free_slots(p)]
        return pool[int(self.rng.integers(len(pool)))] if pool else None

    # -- decisions ---------------------------------------------------------------------------
    def _candidates(self) -> list[int]:
        act = self.script.activity
        held = {o for o in self.held.values() if o is not None}
        out = []
        for oid, (place, _, _) in sorted(self.obj_place.items()):
            if oid in held or oid in self.script.never_touch or place not in act.sources:
                continue
            if not act.repeat and oid in self.handled:
                continue
            if act.destinations and not any(
                self.layout.free_slots(d) for d in act.destinations if d != place
            ):
                continue
            out.append(oid)
        return out

    def _destination(self, oid: int) -> tuple[str, int]:
        act = self.script.activity
        src_place, src_slot = self._picked_from[oid]
        if act.put_back:
            free = self.layout.free_slots(src_place)
            return src_place, src_slot if src_slot in free else int(free[int(self.rng.integers(len(free)))])
        options = [d for d in act.destinations if d != src_place and self.layout.free_slots(d)]
        if not options:  # everything full: put it back where it came from
            options = [src_place]
        place = options[int(self.rng.integers(len(options)))]
        free = self.layout.free_slots(place)
        return place, int(free[int(self.rng.integers(len(free)))])

    def _switch_activity(self) -> bool:
        """Live mode: pick another activity that has something to do; False if none has."""
        current = self.script.activity.name
        for i in self.rng.permutation(len(ACTIVITIES)):
            act = ACTIVITIES[int(i)]
            if act.name == current:
                continue
            self.script.activity = act
            self.handled.clear()
            self.script.never_touch = set()
            if self._candidates():
                self.script.activities.append((self.t, act.name))
                self.activity_picks = 0
                self.episode_picks = int(self.decide.integers(3, 8))
                return True
        self.script.activity = ACTIVITY_BY_NAME[current]
        return False

    # -- timing helpers ----------------------------------------------------------------------
    def _look(self, t0: float, target: tuple[float, float], station: str, name: str) -> float:
        """Turn (or walk) to look at ``target``; returns the arrival time."""
        sx, sy, zoom = STATION_VIEW[station]
        view: View = (0.85 * target[0] + 0.15 * sx, 0.85 * target[1] + 0.15 * sy + 25.0, zoom)
        head = self.script.head
        src = head.view_at(max(t0, head.end_time()))
        walking = station != self.station
        dist = math.hypot(view[0] - src[0], view[1] - src[1])
        if walking:
            dur = self.rng.uniform(1.1, 1.6)
        elif dist > 140 and self.rng.random() < 0.6:
            dur = self.rng.uniform(0.22, 0.34)  # a quick turn: blurred frames
        else:
            dur = self.rng.uniform(0.45, 0.85)
        move = head.add_move(t0, _q(dur, self.fps), view, walking=walking, target=name)
        self.station = station
        return move.t1

    def _wander(self, t0: float, t1: float) -> None:
        """Idle head motion: small looks around, sometimes a glance at the window and back."""
        head = self.script.head
        t = t0
        home = head.view_at(t0)
        while t1 - t > 1.2:
            if self.rng.random() < 0.25 and t1 - t > 2.0 and self.station == "table":
                wx, wy = (WINDOW[0] + WINDOW[2]) / 2, (WINDOW[1] + WINDOW[3]) / 2
                m = head.add_move(
                    t, _q(self.rng.uniform(0.25, 0.4), self.fps), (wx, wy + 60, home[2]), target="window"
                )
                t = m.t1 + self.rng.uniform(0.4, 0.9)
                m = head.add_move(t, _q(self.rng.uniform(0.3, 0.5), self.fps), home, target="back")
                t = m.t1 + self.rng.uniform(0.3, 0.8)
            else:
                dst = (home[0] + self.rng.uniform(-70, 70), home[1] + self.rng.uniform(-45, 45), home[2])
                m = head.add_move(t, _q(self.rng.uniform(0.7, 1.4), self.fps), dst, target="around")
                t = m.t1 + self.rng.uniform(0.3, 1.0)

    def _event(self, step: Step, action: str, place: str) -> Event:
        f = self.script.frame_of
        second = step.t_end if step.kind == "pick" else step.t_settle
        self.event_count += 1
        return Event(
            index=self.event_count - 1,
            t=round(step.t_event, 6),
            frame=f(step.t_event),
            action=action,
            object=self.script.objects[step.obj].name,
            place=place,
            hand=step.hand,
            start_t=round(step.t0, 6),
            end_t=round(step.t_end, 6),
            salient_frames=(f(step.t_contact), f(step.t_event), f(second)),
        )

    # -- steps ---------------------------------------------------------------------------------
    def _pick(self, hand: str, oid: int) -> None:
        r, fps = self.rng, self.fps
        place, slot, pos = self.obj_place[oid]
        t0 = max(self.t, self.hand_free_at[hand])
        arrive = self._look(t0, pos, PLACE_BY_NAME[place].station, place)
        t_move = _q(max(t0 + 0.1, arrive - r.uniform(0.15, 0.3)), fps)
        t_contact = _q(t_move + r.uniform(0.55, 0.9), fps)
        t_event = _q(t_contact + r.uniform(0.18, 0.28), fps)
        t_end = _q(t_event + r.uniform(0.45, 0.7), fps)
        inspect = self.script.activity.put_back
        hold = (0.5, 0.6) if inspect else HOLD[hand]
        step = Step(
            "pick",
            hand,
            oid,
            place,
            slot,
            pos,
            t0,
            t_move,
            t_contact,
            t_event,
            t_end,
            t_end,
            hold,
            1.3 if inspect else 1.12,
        )
        self._close_rest(oid, t_event)
        self.layout.occupied.pop((place, slot), None)
        self._picked_from[oid] = (place, slot)
        self.held[hand] = oid
        self.handled.add(oid)
        self.activity_picks += 1
        self.script.steps.append(step)
        self.script.events.append(self._event(step, "pick_up", place))
        self.hand_free_at[hand] = t_end
        self.t = t_end + (r.uniform(0.6, 1.6) if inspect else 0.0)

    def _place(self, hand: str) -> None:
        r, fps = self.rng, self.fps
        oid = self.held[hand]
        assert oid is not None
        place, slot = self._destination(oid)
        kind = self.script.objects[oid].kind
        pos = slot_centre(PLACE_BY_NAME[place], slot, kind)
        t0 = max(self.t, self.hand_free_at[hand])
        self.layout.occupied[(place, slot)] = oid  # reserve now so the other hand cannot take it
        arrive = self._look(t0, pos, PLACE_BY_NAME[place].station, place)
        t_move = _q(max(t0 + 0.1, arrive - r.uniform(0.1, 0.25)), fps)
        t_contact = _q(t_move + r.uniform(0.55, 0.9), fps)
        t_event = _q(t_contact + r.uniform(0.15, 0.25), fps)
        t_settle = _q(t_event + r.uniform(0.15, 0.22), fps)
        t_end = _q(t_settle + r.uniform(0.45, 0.7), fps)
        prev = next(s for s in reversed(self.script.steps) if s.hand == hand and s.kind == "pick")
        step = Step(
            "place",
            hand,
            oid,
            place,
            slot,
            pos,
            t0,
            t_move,
            t_contact,
            t_event,
            t_settle,
            t_end,
            prev.hold,
            prev.hold_scale,
        )
        self.script.rests.append(Rest(oid, place, slot, pos, t_event, math.inf))
        self.obj_place[oid] = (place, slot, pos)
        self.held[hand] = None
        self.script.steps.append(step)
        self.script.events.append(self._event(step, "put_down", place))
        self.hand_free_at[hand] = t_end
        self.t = t_settle + r.uniform(0.0, 0.2)

    def _close_rest(self, oid: int, t: float) -> None:
        for i, rest in enumerate(self.script.rests):
            if rest.obj == oid and rest.t1 == math.inf:
                self.script.rests[i] = Rest(rest.obj, rest.place, rest.slot, rest.pos, rest.t0, t)

    def _idle(self, seconds: float) -> None:
        """Nothing is touched for ``seconds``; long pauses are recorded as idle stretches, from
        the moment every hand has finished moving (a retracting hand is not idle)."""
        t0 = self.t
        t1 = _q(t0 + seconds, self.fps)
        still = max(t0, *self.hand_free_at.values())
        if seconds >= 1.5:
            if t1 - still >= 1.0:
                self.script.idle.append((still, t1))
            self._wander(t0, t1)
        self.t = t1

    # -- the loop ------------------------------------------------------------------------------
    def _place_all(self) -> None:
        while any(self.held[h] is not None for h in HANDS):
            holding = [h for h in HANDS if self.held[h] is not None]
            self._place(min(holding, key=lambda h: self.hand_free_at[h]))

    def _idle_then_pick(self, pause: float, hand: str, oid: int) -> None:
        self._idle(pause)
        self._pick(hand, oid)

    def _idle_then_place(self, pause: float, hand: str) -> None:
        self._idle(pause)
        self._place(hand)

    def _fits(self, action: Callable[[Planner], None], hard_end: float | None) -> bool:
        """Would ``action`` followed by putting everything down still end before ``hard_end``?

        Checked on a deep copy (same generator state, so the real run does exactly the same);
        this keeps the invariant that whatever is in hand can always be put down in time.
        """
        if hard_end is None:
            return True
        sim = copy.deepcopy(self)
        action(sim)
        sim._place_all()
        ends = [s.t_end for s in sim.script.steps]
        return max([sim.t, *ends]) <= hard_end - 0.1 and sim.script.head.end_time() <= hard_end

    def plan_until(self, horizon: float, hard_end: float | None = None) -> Script:
        """Extend the script until ``self.t >= horizon``; with ``hard_end`` nothing runs past it.

        Choices (pauses, which object, which hand) come from ``self.decide``; durations and
        destinations from ``self.rng``. Keeping them apart means drawing a choice never shifts
        the timings that :meth:`_fits` verified for putting everything down.
        """
        d = self.decide
        while self.t < horizon:
            pause = d.uniform(1.6, 4.5) if d.random() < 0.28 else d.uniform(0.15, 0.8)
            holding = [h for h in HANDS if self.held[h] is not None]
            free = [h for h in HANDS if self.held[h] is None]
            cands = self._candidates()
            action: Callable[[Planner], None] | None = None
            if hard_end is None and not holding and self.activity_picks >= self.episode_picks:
                cands = []  # live mode: this episode is long enough, move on to another activity
            if cands and free and (not holding or d.random() < 0.38):
                oid = cands[int(d.integers(len(cands)))]
                x = self.obj_place[oid][2][0]
                prefer_left = x < 560 and "left" in free and d.random() < 0.55
                hand = "left" if prefer_left or "right" not in free else "right"
                action = functools.partial(Planner._idle_then_pick, pause=pause, hand=hand, oid=oid)
            elif holding:
                first = min(holding, key=lambda h: self.hand_free_at[h])
                action = functools.partial(Planner._idle_then_place, pause=pause, hand=first)
            elif hard_end is None:
                if not self._switch_activity():
                    self._idle(2.0)
                continue
            if action is not None and self._fits(action, hard_end):
                action(self)
            elif holding:
                self._place_all()  # verified to fit when the last object was picked up
            else:
                break  # nothing left to do, or nothing more fits before the end
        if hard_end is not None:
            self._place_all()
            still = max(self.t, *self.hand_free_at.values())
            if hard_end - self.t >= 1.5 and hard_end - still >= 1.0:
                self.script.idle.append((still, hard_end))
                self._wander(self.t, hard_end - 0.3)
            self.t = hard_end
        return self.script


def plan_clip(
    rng: np.random.Generator,
    duration: float,
    fps: float,
    *,
    head_motion: bool = True,
    head_rng: np.random.Generator | None = None,
) -> Script:
    """A complete script for a clip of ``duration`` seconds (all objects put down by the end)."""
    n_objects = int(rng.integers(4, 6)) if duration < 20 else int(rng.integers(5, 8))
    planner = Planner(rng, fps, n_objects=n_objects, head_motion=head_motion, head_rng=head_rng)
    return planner.plan_until(duration - 0.5, hard_end=duration)
