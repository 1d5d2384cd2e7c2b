"""Keyframe selection (egovlm.keyframes): motion estimation, interaction stops, novelty, blur
rejection relative to recent sharpness, interval bounds, the offline budgeted form, and event
recall against uniform sampling (on a hand-made clip and on EgoSynth clips with exact events)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from egovlm.keyframes import (
    KeyframeSelector,
    SelectorParams,
    estimate_motion,
    redundancy_victim,
    select_keyframes,
    spread_select,
)
from egovlm.video import uniform_times

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


def _egosynth(seed: int, duration: float = 12.0) -> tuple[list[tuple[float, np.ndarray]], list[float]]:
    """A short EgoSynth clip (320x240, 30 fps) rendered in memory, and its exact event times."""
    from egovlm.synth.generate import SynthConfig, build_clip

    clip = build_clip("test", seed, 0, SynthConfig(size=(320, 240), duration=duration))
    frames = [(t, clip.renderer.render(t, i)) for i, t in enumerate(clip.times())]
    return frames, [e.t for e in clip.script.events]


def test_egosynth_event_recall_beats_uniform_at_a_small_budget() -> None:
    """Pick-ups and put-downs (head turns, hands reaching, grasping, carrying) on four 12 s clips
    the selector was not tuned on: with a frame per 3 s, the selector must land on the events;
    uniform sampling (or a selector that degrades to it) hits about a third of them."""
    k = 4
    ours = base = total = 0
    for seed in (8101, 8102, 8103, 8104):
        frames, events = _egosynth(seed)
        assert len(events) >= 2
        chosen = select_keyframes(frames, k)
        assert len(chosen) == k
        ours += round(_recall([c.t for c in chosen], events) * len(events))
        span = frames[-1][0] - frames[0][0]
        base += round(_recall(list(uniform_times(span, k)), events) * len(events))
        total += len(events)
    assert ours / total >= 0.75, f"selector recall {ours}/{total}"
    assert ours > base + 0.25 * total, f"selector {ours}/{total} vs uniform {base}/{total}"


def test_motion_separates_head_shift_exposure_and_local_change() -> None:
    rng = np.random.default_rng(0)
    ref = (100 + 60 * rng.random((24, 32))).astype(np.float32)
    turned = np.roll(ref, (1, -2), axis=(0, 1))  # the view moved by a cell down, two left
    m = estimate_motion(ref, turned, max_shift=3, threshold=6.0)
    assert m.moving and m.shift == (-1, 2) and m.activity < 0.5
    brighter = ref + 25.0  # auto-exposure: all of the frame at once
    m = estimate_motion(ref, brighter, max_shift=3, threshold=6.0)
    assert not m.moving and m.activity < 0.5
    hand = ref.copy()
    hand[14:24, 10:18] = 30.0  # something dark entered the lower middle
    m = estimate_motion(ref, hand, max_shift=3, threshold=6.0)
    assert not m.moving and m.activity > 5.0
    cut = (100 + 60 * rng.random((24, 32))).astype(np.float32)  # an unrelated view
    assert not estimate_motion(ref, cut, max_shift=3).moving


def test_a_hand_coming_to_rest_is_a_settled_keyframe() -> None:
    """A blob sweeps in over a still view and stops: the selector takes the stop, once."""
    bg = _background(7)
    frames = []
    for i in range(40):  # 4 s at 10 fps; the hand moves from t=1.0 to t=2.0, then rests
        t = i / 10
        img = bg.copy()
        x = int(np.clip(5 + 100 * (t - 1.0), 5, 105))
        if t >= 1.0:
            img[60:110, x : x + 40] = 40.0
        gray = np.clip(img, 0, 255).astype(np.uint8)
        frames.append((t, np.repeat(gray[:, :, None], 3, axis=2)))
    sel = KeyframeSelector(SelectorParams(max_interval_s=30.0))
    decisions = [sel.offer(t, f) for t, f in frames]
    settled = [d for d in decisions if d.reason == "settled"]
    assert len(settled) == 1 and 2.0 <= settled[0].t <= 2.5, [(d.t, d.reason) for d in decisions]
    assert settled[0].burst > settled[0].activity


def test_spread_select_keeps_gaps_and_prefers_valuable_frames() -> None:
    t = np.arange(0, 10.0, 0.1)
    utility = np.zeros(len(t))
    utility[33] = 5.0  # t=3.3
    chosen = spread_select(t, utility, k=4, gap=4.0, min_sep=0.5)
    assert chosen is not None and len(chosen) == 4 and 33 in chosen
    picks = t[chosen]
    assert picks[0] - t[0] <= 2.0 and t[-1] - picks[-1] <= 2.0 and np.diff(picks).max() <= 4.0
    even = t[spread_select(t, np.zeros(len(t)), k=5, gap=10.0)]  # nothing to prefer: spread out
    assert np.allclose(np.diff(even), 2.0, atol=0.11)
    assert spread_select(t, utility, k=2, gap=1.0) is None  # two frames cannot cover 10 s by 1 s


def test_a_budget_that_can_cover_the_clip_leaves_no_moment_uncovered() -> None:
    """With k x coverage_s >= the clip, every moment is within coverage_s / 2 of a keyframe (so
    the offline form is never worse than uniform sampling at that density)."""
    frames, _ = _egosynth(8103, duration=8.0)
    p = SelectorParams()
    k = int(np.ceil((frames[-1][0] - frames[0][0]) / p.coverage_s)) + 1
    picks = np.array([c.t for c in select_keyframes(frames, k, p)])
    grid = np.array([t for t, _ in frames])
    worst = np.abs(grid[:, None] - picks[None, :]).min(axis=1).max()
    assert len(picks) == k and worst <= p.coverage_s / 2 + 1e-9
