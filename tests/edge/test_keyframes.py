"""Keyframe selection (egovlm.keyframes): novelty, blur rejection relative to recent sharpness,
interval bounds, the offline budgeted form, and event recall against uniform sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from egovlm.keyframes import KeyframeSelector, SelectorParams, redundancy_victim, select_keyframes

H, W = 120, 160


def _background(seed: int = 0) -> np.ndarray:
    """A smooth textured room: low-frequency luma so small head jitter changes little."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    rng = np.random.default_rng(seed)
    img = np.full((H, W), 110.0, dtype=np.float32)
    for _ in range(4):
        fy, fx, ph = rng.uniform(0.01, 0.04), rng.uniform(0.01, 0.04), rng.uniform(0, 6.28)
        img += 25 * np.sin(fy * yy + fx * xx + ph)
    # Fine texture (edges) so frames have real sharpness to lose when blurred.
    img += np.where((xx.astype(int) // 4 + yy.astype(int) // 4) % 2 == 0, 6.0, -6.0)
    return img


def _box(img: np.ndarray, k: int) -> np.ndarray:
    pad = np.pad(img, ((0, 0), (k // 2, k // 2)), mode="edge")
    c = np.concatenate([np.zeros((img.shape[0], 1)), np.cumsum(pad, axis=1, dtype=np.float64)], axis=1)
    return ((c[:, k:] - c[:, :-k]) / k).astype(np.float32)


def _blur(img: np.ndarray, k: int = 9) -> np.ndarray:
    """Motion blur: a k x k box (shake in both directions)."""
    return _box(_box(img, k).T, k).T


def _clip(
    duration_s: float, fps: float, events: list[float], seed: int = 0
) -> list[tuple[float, np.ndarray]]:
    """Head-mounted-camera-like clip: jitter, sensor noise, and at each event time a new object
    appears (the hand brings it in with motion blur around the moment)."""
    rng = np.random.default_rng(seed)
    bg = _background(seed)
    frames = []
    dx = dy = 0
    for i in range(int(duration_s * fps)):
        t = i / fps
        dx = int(np.clip(dx + rng.integers(-1, 2), -2, 2))
        dy = int(np.clip(dy + rng.integers(-1, 2), -2, 2))
        img = np.roll(bg, (dy, dx), axis=(0, 1)).copy()
        for n, e in enumerate(events):
            if t >= e:
                y0, x0 = 2 + (n % 3) * 40, 5 + (n // 3) * 75
                img[y0 : y0 + 38, x0 : x0 + 60] = 240.0 if n % 2 == 0 else 15.0
        if any(e - 0.3 <= t < e + 0.15 for e in events) or rng.random() < 0.05:
            img = _blur(img)
        img += rng.normal(0, 2.0, img.shape)
        gray = np.clip(img, 0, 255).astype(np.uint8)
        frames.append((t, np.repeat(gray[:, :, None], 3, axis=2)))
    return frames


def _recall(times: list[float], events: list[float], tol: float = 0.5) -> float:
    return sum(any(abs(t - e) <= tol for t in times) for e in events) / len(events)


def test_event_recall_beats_uniform_sampling() -> None:
    events = [4.3, 13.7, 21.2, 33.9, 41.6, 52.8]
    frames = _clip(60.0, 10.0, events, seed=1)
    k = 8
    chosen = select_keyframes(frames, k)
    assert len(chosen) == k
    ours = _recall([c.t for c in chosen], events)
    n = len(frames)
    uniform = [frames[int((j + 0.5) * n / k)][0] for j in range(k)]
    base = _recall(uniform, events)
    assert ours > base
    assert ours >= 5 / 6, f"recall {ours:.2f} with picks {[(c.t, c.reason) for c in chosen]}"


def test_static_scene_gets_forced_keyframes_within_interval_bounds() -> None:
    p = SelectorParams(max_interval_s=3.0, min_interval_s=0.5)
    sel = KeyframeSelector(p)
    frames = _clip(10.0, 10.0, events=[], seed=2)
    picks = [d for t, f in frames if (d := sel.offer(t, f)).keyframe]
    assert picks[0].reason == "first"
    assert {d.reason for d in picks[1:]} == {"forced"}
    gaps = np.diff([d.t for d in picks])
    assert len(picks) >= 3 and gaps.max() <= p.max_interval_s + p.blur_grace_s + 1e-9
    assert gaps.min() >= p.min_interval_s


def test_novelty_triggers_and_blurry_frames_wait_for_a_sharp_one() -> None:
    frames = _clip(6.0, 10.0, events=[3.0], seed=3)
    sel = KeyframeSelector(SelectorParams(max_interval_s=30.0))
    decisions = [sel.offer(t, f) for t, f in frames]
    novel = [d for d in decisions if d.reason == "novel"]
    assert len(novel) == 1 and 3.0 <= novel[0].t <= 3.5
    # The frames of the event itself are blurred: rejected as blurry, not taken.
    around = [d for d in decisions if 3.0 <= d.t < 3.15]
    assert around and all(d.reason == "blurry" for d in around)


def test_blur_threshold_is_relative_to_recent_sharpness() -> None:
    """A uniformly soft camera still yields keyframes (an absolute threshold alone would starve
    it), while a frame much softer than its neighbours is rejected."""
    frames = [
        (t, np.repeat(_blur(f[:, :, 0].astype(np.float32), 5).astype(np.uint8)[:, :, None], 3, 2))
        for t, f in _clip(12.0, 10.0, [6.0], seed=4)
    ]
    picks = select_keyframes(frames, k=None, params=SelectorParams(max_interval_s=4.0))
    assert any(c.reason == "novel" for c in picks)
    sel = KeyframeSelector(SelectorParams(min_interval_s=0.0, max_interval_s=0.05))
    for t, f in frames[:20]:
        sel.offer(t, f)
    very_soft = np.repeat(
        _blur(frames[20][1][:, :, 0].astype(np.float32), 25).astype(np.uint8)[:, :, None], 3, 2
    )
    d = sel.offer(frames[20][0], very_soft)
    assert d.reason == "blurry" and d.sharpness < 0.5 * d.sharp_ref


def test_view_already_in_the_bank_is_not_added_again() -> None:
    frames = _clip(3.0, 10.0, events=[1.0], seed=5)
    sel = KeyframeSelector(SelectorParams(max_interval_s=60.0, min_interval_s=0.0))
    decisions = [sel.offer(t, f) for t, f in frames]
    assert [d.reason for d in decisions if d.keyframe] == ["first", "novel"]  # empty scene, object
    bank = np.stack(list(sel._memory))  # both views held
    # Back to the empty view: novel against the last keyframe, but already in the bank.
    d = sel.offer(frames[-1][0] + 0.1, frames[2][1], bank=bank)
    assert d.reason == "in_bank" and d.mad_last >= sel.params.novelty


def test_offline_budget_trims_and_fills() -> None:
    frames = _clip(20.0, 5.0, events=[5.0, 10.0, 15.0], seed=6)
    assert len(select_keyframes(frames, k=2)) == 2
    many = select_keyframes(frames, k=12)
    assert len(many) == 12 and [c.t for c in many] == sorted(c.t for c in many)
    assert any(c.reason == "fill" for c in many)
    assert len({c.index for c in many}) == 12
    assert select_keyframes([], k=4) == []
    with pytest.raises(ValueError, match="k must be"):
        select_keyframes(frames, k=0)


def test_timestamps_must_not_go_backwards() -> None:
    sel = KeyframeSelector()
    f = _clip(0.2, 10.0, [])[0][1]
    sel.offer(1.0, f)
    with pytest.raises(ValueError, match="backwards"):
        sel.offer(0.5, f)


def test_redundancy_victim_prefers_dropping_coverage_frames() -> None:
    a = np.zeros((24, 32), np.float32)
    thumbs = np.stack([a, a + 1, a + 200])
    # Same view twice, equally sharp: the coverage-only (priority 0) one goes, even though newer.
    assert redundancy_victim(thumbs, [10, 10, 10], [0.0, 5.0, 9.0], priority=[1, 0, 1]) == 1
    assert redundancy_victim(thumbs, [10, 10, 10], [0.0, 5.0, 9.0]) == 0  # else the older
    assert redundancy_victim(thumbs, [10, 50, 10], [0.0, 5.0, 9.0]) == 0  # clearly less sharp


def test_params_from_yaml_name_the_file_and_field(tmp_path: Path) -> None:
    good = tmp_path / "sel.yaml"
    good.write_text("selector:\n  novelty: 12\n  max_interval_s: 5\n")
    p = SelectorParams.from_yaml(good, section="selector")
    assert p.novelty == 12 and p.max_interval_s == 5 and p.blur_ratio == SelectorParams().blur_ratio
    bad = tmp_path / "bad.yaml"
    bad.write_text("novelty: -1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*novelty"):
        SelectorParams.from_yaml(bad)
    bad.write_text("novelti: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*novelti"):
        SelectorParams.from_yaml(bad)
    with pytest.raises(ValueError, match="max_interval_s"):
        SelectorParams(min_interval_s=5, max_interval_s=1)
