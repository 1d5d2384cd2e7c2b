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
