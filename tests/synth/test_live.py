"""LiveSynth: the endless real-time frame source behind ``synth://``."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np

from egovlm.synth.live import LiveSynth


def test_frames_timestamps_and_events() -> None:
    src = LiveSynth((160, 120), fps=20, seed=3, realtime=False)
    frames = list(itertools.islice(src, 20 * 40))  # 40 s of stream
    assert [round(ts * 20) for ts, _, _ in frames] == list(range(len(frames)))
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for _, f, _ in frames)
    events = [(i, e) for i, (_, _, evs) in enumerate(frames) for e in evs]
    assert len(events) >= 4
    assert all(e.frame == i for i, e in events)
    assert [e.index for _, e in events] == list(range(len(events)))  # none lost, none repeated
    # ground truth alternates per object: a pick-up always precedes that object's put-down
    holding: set[str] = set()
    for _, e in events:
        if e.action == "pick_up":
            assert e.object not in holding
            holding.add(e.object)
        else:
            assert e.object in holding
            holding.discard(e.object)
    assert src.recent_events == [e for _, e in events]


def test_same_seed_same_stream() -> None:
    a = LiveSynth((128, 96), fps=10, seed=4, realtime=False)
    b = LiveSynth((128, 96), fps=10, seed=4, realtime=False)
    for (ta, fa, ea), (tb, fb, eb) in itertools.islice(zip(a, b, strict=False), 120):
        assert ta == tb and ea == eb and np.array_equal(fa, fb)


def test_runs_long_without_growing() -> None:
    src = LiveSynth((64, 48), fps=4, seed=1, realtime=False)
    for _ in itertools.islice(src, 4 * 360):  # six minutes of stream
        pass
    script = src._planner.script
    assert len(script.steps) < 40 and len(script.head.moves) < 80 and len(script.rests) < 40
    assert len(script.activities) >= 3  # it keeps switching activity


def test_realtime_pacing_and_stop_from_another_thread() -> None:
    src = LiveSynth((64, 48), fps=25, seed=0, realtime=True)
    start = time.monotonic()
    first = list(itertools.islice(src, 10))
    assert time.monotonic() - start >= 9 / 25 - 0.02  # frame 9 is not returned before 0.36 s
    assert len(first) == 10
    got: list[float] = []

    def consume() -> None:
        for ts, _, _ in src:
            got.append(ts)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.3)
    src.stop()
    thread.join(timeout=2)
    assert not thread.is_alive() and got
    assert src.read() is None
