import json

import av
import numpy as np
import pytest
from PIL import Image

from egovlm.video import VideoError, VideoReader, read_frame_dir, uniform_times


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """30 frames at 10 fps; frame i is a flat grey of level 8*i (H.264, like EgoSynth)."""
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8), format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def test_probe(clip):
    info = VideoReader(clip).info
    assert (info.width, info.height, info.frames) == (64, 48, 30)
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(3.0)


def test_frames_at_returns_the_frame_shown_at_each_time(clip):
    got = VideoReader(clip).frames_at([2.05, 0.0, 0.99])
    assert [round(t, 2) for t, _ in got] == [2.0, 0.0, 0.9]
    levels = [float(img.mean()) for _, img in got]
    assert levels == pytest.approx([160, 0, 72], abs=3)


def test_uniform_is_a_contract_frame_set(clip):
    frames = VideoReader(clip).uniform(3)
    assert [f.index for f in frames] == [1, 2, 3]
    assert [f.timestamp_s for f in frames] == pytest.approx([0.5, 1.5, 2.5])
    assert uniform_times(3.0, 3) == pytest.approx([0.5, 1.5, 2.5])


def test_missing_and_corrupt_videos_name_the_file(tmp_path, clip):
    with pytest.raises(VideoError, match="not found: .*nope.mp4"):
        VideoReader(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(VideoError, match="bad.mp4"):
        _ = VideoReader(bad).info
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(clip.read_bytes()[:200])
    with pytest.raises(VideoError, match="trunc.mp4"):
        VideoReader(truncated).frames_at([1.0])


def test_frame_dir(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), 50 * i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "frames.json").write_text(json.dumps([{"file": f"{i}.png", "t": 3.0 - i} for i in range(3)]))
    frames = read_frame_dir(tmp_path)
    assert [t for t, _ in frames] == [1.0, 2.0, 3.0]
    assert int(frames[0][1][0, 0, 0]) == 100


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """40 s at 10 fps with a key frame every 10 frames; frame i's grey level is (5 * i) % 250."""
    path = tmp_path_factory.mktemp("v") / "long.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10, options={"g": "10", "keyint_min": "10", "sc_threshold": "0"})
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(400):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), (5 * i) % 250, np.uint8), format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.mark.parametrize("gap", [0.5, 4.0, 1e9])
def test_frames_at_with_seeks_equals_decoding_everything(long_clip, gap):
    """Jumping over gaps by seeking picks exactly the frames a full decode would (gap 1e9: never seeks)."""
    everything = list(VideoReader(long_clip).iter_frames())
    times = [39.95, 0.0, 12.34, 12.36, 30.0, 5.0, 100.0, 20.9, 21.0, 0.05]
    got = VideoReader(long_clip).frames_at(times, seek_gap_s=gap)
    for want_t, (t, img) in zip(times, got, strict=True):
        expected = max((f for f in everything if f[0] <= want_t + 1e-6), key=lambda f: f[0])
        assert t == pytest.approx(expected[0])
        assert float(img.mean()) == pytest.approx(float(expected[1].mean()), abs=3)


def test_frames_at_late_window_decodes_few_frames(long_clip, monkeypatch):
    """A time 35 s in decodes a GOP or two, not the 350 frames before it."""
    reader = VideoReader(long_clip)
    decoded = []
    original = reader._decode

    def counting(container):
        for frame in original(container):
            decoded.append(frame[0])
            yield frame

    monkeypatch.setattr(reader, "_decode", counting)
    ((t, _),) = reader.frames_at([35.0])
    assert t == pytest.approx(35.0)
    assert len(decoded) <= 25
