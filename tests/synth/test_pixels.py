"""EgoSynth ground truth checked against rendered pixels, not against the generator's bookkeeping.

Static mode (fixed wide camera, no noise/exposure/blur) makes exact pixel statements possible:
an idle stretch is pixel-identical, and the object named by a pick-up leaves its region while
the one named by a put-down appears at its destination. Realistic mode (head motion, noise) is
checked by the object's own colour inside its projected box.
"""

from __future__ import annotations

import numpy as np
import pytest

from egovlm.synth.generate import Clip, SynthConfig, build_clip
from egovlm.synth.objects import KINDS
from egovlm.synth.scene import PLACE_BY_NAME, slot_centre

STATIC = SynthConfig(
    size=(640, 480), fps=10, duration=14, head_motion=False, noise=False, exposure=False, blur=False
)
REAL = SynthConfig(size=(640, 480), fps=10, duration=14)


def colour_fraction(
    frame: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int], tol: int = 45
) -> float:
    """Share of pixels in ``box`` within ``tol`` (per channel) of ``colour``."""
    x0, y0, x1, y1 = box
    roi = frame[y0:y1, x0:x1].astype(np.int16)
    if roi.size == 0:
        return 0.0
    close = np.all(np.abs(roi - np.array(colour, np.int16)) <= tol, axis=2)
    return float(close.mean())


def foreground_fraction(clip: Clip, frame: np.ndarray, t: float, box: tuple[int, int, int, int]) -> float:
    """Share of pixels in ``box`` that differ from the empty room (static mode: exact)."""
    x0, y0, x1, y1 = box
    empty = clip.renderer.render_empty(t)
    diff = np.abs(frame.astype(np.int16) - empty.astype(np.int16))[y0:y1, x0:x1].max(axis=2)
    return float((diff > 30).mean())


def frame_at(clip: Clip, t: float) -> np.ndarray:
    i = min(round(t * clip.config.fps), clip.config.n_frames - 1)
    return clip.renderer.render(i / clip.config.fps, i)


@pytest.fixture(scope="module", params=[0, 1, 2])
def static_clip(request: pytest.FixtureRequest) -> Clip:
    return build_clip("test", 7, request.param, STATIC)


def _place_pos(clip: Clip, event_object: str, place: str, when: float) -> tuple[float, float]:
    """Where the object rests in ``place`` around time ``when`` (from the rest intervals)."""
    obj = clip.script.obj_by_name(event_object)
    rest = next(
        r
        for r in clip.script.rests
        if r.obj == obj.id and r.place == place and (r.t0 <= when < r.t1 or r.t1 == when)
    )
    return rest.pos


def test_static_clip_has_events_and_idle(static_clip: Clip) -> None:
    assert static_clip.script.events, "a 14 s clip must contain at least one pick-up"
    assert any(e.action == "put_down" for e in static_clip.script.events)


def test_pick_up_empties_the_source_region(static_clip: Clip) -> None:
    clip = static_clip
    for e in (e for e in clip.script.events if e.action == "pick_up"):
        kind = KINDS[e.object]
        pos = _place_pos(clip, e.object, e.place, e.t)
        box = clip.renderer.world_box(pos, kind.size, e.t)
        before = frame_at(clip, e.start_t)
        after = frame_at(clip, e.end_t)
        diff = np.abs(before.astype(int) - after.astype(int))[box[1] : box[3], box[0] : box[2]].mean()
        assert diff > 12, f"{e.object} picked up at {e.t}s: its region barely changed ({diff:.1f})"
        f_before = foreground_fraction(clip, before, e.start_t, box)
        f_after = foreground_fraction(clip, after, e.end_t, box)
        assert f_before > 0.25, f"{e.object} not visible at its source before the pick-up ({f_before:.2f})"
        assert f_after < f_before * 0.5, f"{e.object} still at its source after the pick-up ({f_after:.2f})"
        assert colour_fraction(before, box, kind.colour) > 0.1, f"{e.object}: its colour is not in its box"


def test_put_down_fills_the_destination(static_clip: Clip) -> None:
    clip = static_clip
    for e in (e for e in clip.script.events if e.action == "put_down"):
        kind = KINDS[e.object]
        obj = clip.script.obj_by_name(e.object)
        rest = next(r for r in clip.script.rests if r.obj == obj.id and r.t0 == e.t)
        assert rest.place == e.place
        box = clip.renderer.world_box(rest.pos, kind.size, e.t)
        before = frame_at(clip, e.start_t)
        after = frame_at(clip, e.end_t)
        f_before = foreground_fraction(clip, before, e.start_t, box)
        f_after = foreground_fraction(clip, after, e.end_t, box)
        assert f_after > 0.25, f"{e.object} not visible {e.place} after the put-down ({f_after:.2f})"
        assert f_after > f_before + 0.15, (
            f"{e.object}: destination unchanged ({f_before:.2f} -> {f_after:.2f})"
        )
        assert colour_fraction(after, box, kind.colour) > 0.1, f"{e.object}: its colour is not in its box"


def test_idle_stretches_do_not_change(static_clip: Clip) -> None:
    clip = static_clip
    assert clip.script.idle, "expected at least one idle stretch"
    for t0, t1 in clip.script.idle:
        ts = [t for t in clip.times() if t0 + 0.05 <= t <= t1 - 0.05]
        ref = frame_at(clip, ts[0])
        for t in ts[1::3]:
            assert np.array_equal(ref, frame_at(clip, t)), (
                f"pixels changed during idle stretch {t0:.2f}-{t1:.2f}s at {t:.2f}s"
            )


def test_steps_do_change_pixels(static_clip: Clip) -> None:
    """The converse of the idle test: while a hand moves, consecutive frames differ."""
    step = static_clip.script.steps[0]
    a = frame_at(static_clip, step.t_contact - 0.3)
    b = frame_at(static_clip, step.t_contact)
    assert np.abs(a.astype(int) - b.astype(int)).max() > 40


def test_realistic_pick_up_moves_the_object_in_view() -> None:
    """With head motion, blur and noise, the object's colour still leaves its projected box."""
    checked = 0
    for index in range(3):
        clip = build_clip("test", 11, index, REAL)
        for e in (e for e in clip.script.events if e.action == "pick_up"):
            kind = KINDS[e.object]
            pos = _place_pos(clip, e.object, e.place, e.t)
            step = next(s for s in clip.script.steps if s.kind == "pick" and abs(s.t_event - e.t) < 1e-6)
            arrival = max(m.t1 for m in clip.script.head.moves if m.t0 <= step.t_move + 1e-9)
            t_before = min(arrival + 0.05, step.t_contact - 0.2)  # head on the object, hand approaching
            t_after = e.end_t + 0.2
            b0 = clip.renderer.world_box(pos, kind.size, t_before)
            b1 = clip.renderer.world_box(pos, kind.size, t_after)
            if (b0[2] - b0[0]) * (b0[3] - b0[1]) < 200 or (b1[2] - b1[0]) * (b1[3] - b1[1]) < 200:
                continue  # the head looks elsewhere at one of the moments
            if colour_fraction(clip.renderer.render_empty(t_after), b1, kind.colour, tol=55) > 0.05:
                continue  # the surface itself has the object's colour (silver spoon in the steel sink)
            f0 = colour_fraction(frame_at(clip, t_before), b0, kind.colour, tol=55)
            f1 = colour_fraction(frame_at(clip, t_after), b1, kind.colour, tol=55)
            assert f0 > 0.1 and f1 < f0 * 0.6, f"{clip.clip_id} {e.object} at {e.t}s: {f0:.2f} -> {f1:.2f}"
            checked += 1
    assert checked >= 3


def test_slots_of_a_place_do_not_overlap() -> None:
    """Objects placed in neighbouring slots must stay separately visible (the pixel checks rely on it)."""
    for place in PLACE_BY_NAME.values():
        centres = [slot_centre(place, i, KINDS["red cup"]) for i in range(len(place.slots))]
        for i, a in enumerate(centres):
            for b in centres[i + 1 :]:
                assert max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 70, place.name


def test_hd_frame_size() -> None:
    clip = build_clip("test", 0, 0, SynthConfig(size=(1280, 720), fps=30, duration=4))
    frame = clip.renderer.render(1.0)
    assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # not a blank image
