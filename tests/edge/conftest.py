"""Fixtures shared by the edge tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from egovlm.edge.gst import gst


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 s of MJPEG in Matroska (20 frames at 20 fps), written by GStreamer itself."""
    path = tmp_path_factory.mktemp("clips") / "clip.mkv"
    g = gst()
    p = g.parse_launch(
        "videotestsrc num-buffers=20 pattern=ball ! video/x-raw,width=160,height=120,framerate=20/1 ! "
        f"jpegenc ! matroskamux ! filesink location={path}"
    )
    p.set_state(g.State.PLAYING)
    msg = p.get_bus().timed_pop_filtered(10 * g.SECOND, g.MessageType.EOS | g.MessageType.ERROR)
    p.set_state(g.State.NULL)
    assert msg is not None and msg.type == g.MessageType.EOS
    return path


@pytest.fixture(scope="module")
def nano_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real TensorRT-target export (fp16 graphs, planned profiles, engines pending a device)."""
    from tests.exports import quick_export

    out = tmp_path_factory.mktemp("exports") / "nano"
    return quick_export(tiny_model_dir, out, "orin-nano", "fp16", max_new_tokens=4)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """The test machine's 2 cores are shared; one intra-op thread avoids OpenMP spin under load
    (10x faster here when other jobs run) and changes no result. Modules running a torch model
    ask for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
