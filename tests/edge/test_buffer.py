"""The rolling keyframe buffer: capacity, redundancy and age eviction, versions, immutability,
thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from egovlm.descriptor import Descriptor
from egovlm.edge.buffer import KeyframeBuffer

GRID = (24, 32)


def _desc(level: float, sharpness: float = 100.0, pattern: int | None = None) -> Descriptor:
    """A thumbnail at a mean luma ``level``; ``pattern`` adds a distinct structure."""
    thumb = np.full(GRID, level, dtype=np.float32)
    if pattern is not None:
        rng = np.random.default_rng(pattern)
        thumb = np.clip(thumb + rng.normal(0, 40, GRID), 0, 255).astype(np.float32)
    return Descriptor(thumb=thumb, sharpness=sharpness)


IMG = np.zeros((8, 8, 3), dtype=np.uint8)


def test_capacity_and_redundancy_not_fifo() -> None:
    buf = KeyframeBuffer(capacity=3)
    event = buf.add(0.0, IMG, _desc(200.0, pattern=1))  # the one distinct view, oldest
    for i in range(4):  # a static stretch: near-identical views
        buf.add(1.0 + i, IMG, _desc(50.0 + 0.5 * i))
    snap = buf.snapshot()
    assert len(snap) == 3
    assert event is not None and event.id in snap.ids  # FIFO would have dropped it first
    assert buf.stats.evicted_redundant == 2
    assert [k.t for k in snap.keyframes] == sorted(k.t for k in snap.keyframes)


def test_redundant_pair_drops_less_sharp_else_older() -> None:
    buf = KeyframeBuffer(capacity=2, sharp_tie=0.2)
    buf.add(0.0, IMG, _desc(10.0, pattern=5))
    blurry = buf.add(1.0, IMG, _desc(120.0, sharpness=20.0))
    sharp = buf.add(2.0, IMG, _desc(121.0, sharpness=100.0))  # same view, sharper
    assert blurry is not None and sharp is not None
    assert blurry.id not in buf.snapshot().ids and sharp.id in buf.snapshot().ids

    newer = buf.add(3.0, IMG, _desc(121.5, sharpness=95.0))  # same view, equally sharp: recency wins
    assert newer is not None
    assert buf.snapshot().ids[-1] == newer.id and sharp.id not in buf.snapshot().ids


def test_new_keyframe_can_itself_be_the_redundant_one() -> None:
    buf = KeyframeBuffer(capacity=2)
    buf.add(0.0, IMG, _desc(10.0, pattern=1))
    buf.add(1.0, IMG, _desc(120.0, sharpness=100.0))
    v = buf.version
    assert buf.add(2.0, IMG, _desc(120.2, sharpness=10.0)) is None  # blurry duplicate
    assert buf.version == v and buf.stats.rejected_redundant == 1


def test_age_eviction_beyond_horizon() -> None:
    buf = KeyframeBuffer(capacity=10, horizon_s=5.0)
    for i in range(4):
        buf.add(float(i), IMG, _desc(40.0 * i, pattern=i))
    assert len(buf) == 4
    buf.add(7.5, IMG, _desc(250.0, pattern=9))  # newest 7.5: t < 2.5 are too old
    assert [k.t for k in buf.snapshot().keyframes] == [3.0, 7.5]
    assert buf.stats.evicted_age == 3
    assert buf.expire(20.0) == 2 and len(buf) == 0


def test_version_snapshot_and_immutability() -> None:
    buf = KeyframeBuffer(capacity=4)
    assert buf.version == 0 and len(buf.snapshot()) == 0
    img = np.full((8, 8, 3), 7, dtype=np.uint8)
    kf = buf.add(1.0, img, _desc(10.0, pattern=1))
    assert kf is not None and buf.version == 1
    img[:] = 99  # the caller's array is copied
    snap = buf.snapshot()
    assert int(snap.keyframes[0].image[0, 0, 0]) == 7
    with pytest.raises(ValueError):
        snap.keyframes[0].image[0, 0, 0] = 1
    assert isinstance(snap.keyframes, tuple)
    buf.add(2.0, IMG, _desc(90.0, pattern=2))
    assert buf.version == 2 and len(snap) == 1  # an old snapshot does not change
    frames = buf.snapshot().frames()
    assert [f.index for f in frames] == [1, 2] and [f.timestamp_s for f in frames] == [1.0, 2.0]
    buf.clear()
    assert buf.version == 3 and len(buf) == 0


def test_wait_for_change_wakes_on_add() -> None:
    buf = KeyframeBuffer(capacity=2)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(buf.wait_for_change(0, timeout=10)))
    waiter.start()
    buf.add(0.0, IMG, _desc(1.0))
    waiter.join(10)
    assert got == [1]
    assert buf.wait_for_change(1, timeout=0.01) == 1  # timeout returns the unchanged version


def test_concurrent_adds_and_snapshots_are_consistent() -> None:
    buf = KeyframeBuffer(capacity=6, horizon_s=1000)
    errors: list[str] = []

    def writer(seed: int) -> None:
        for i in range(60):
            buf.add(seed * 1000 + i, IMG, _desc(float((seed * 37 + i * 11) % 250), pattern=seed * 100 + i))

    def reader() -> None:
        last = -1
        for _ in range(300):
            snap = buf.snapshot()
            if len(snap) > 6 or snap.version < last:
                errors.append(f"bad snapshot {len(snap)} v{snap.version}")
            if [k.t for k in snap.keyframes] != sorted(k.t for k in snap.keyframes):
                errors.append("snapshot out of time order")
            last = snap.version

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(buf) == 6
    s = buf.stats
    assert s.added + s.rejected_redundant + s.rejected_age == 180
    assert s.added - s.evicted_redundant - s.evicted_age == 6


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="capacity"):
        KeyframeBuffer(capacity=0)
    with pytest.raises(ValueError, match="horizon"):
        KeyframeBuffer(capacity=2, horizon_s=0)
