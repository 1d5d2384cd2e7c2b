"""`egovlm bench peers`: the frames and prompts every runtime gets, the verdict, the worker protocol,
and (slow, needs the peers venv from `make bench-peers`) one quick run on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from egovlm.benchmarks import peers
from egovlm.models.files import keyframe_size_of

ROOT = Path(__file__).resolve().parents[2]


def test_new_keyframe_frame_list_is_what_our_buffer_keeps(tmp_path: Path) -> None:
    fs = peers.make_frames(tmp_path, k=4, repeat=0, size=(112, 84))
    assert len(fs.frames) == 4 and len(fs.after_new) == 4
    assert all(Path(f["path"]).is_file() for f in fs.frames)
    # Exactly one frame was replaced by the newest (t = 9.0), or the newest was rejected as redundant.
    before, after = {f["t"] for f in fs.frames}, {f["t"] for f in fs.after_new}
    assert after == before or (len(after - before) == 1 and after - before == {9.0})
    assert [f["t"] for f in fs.after_new] == sorted(f["t"] for f in fs.after_new)


def test_same_seed_same_pixels(tmp_path: Path) -> None:
    a = peers.make_frames(tmp_path / "a", k=2, repeat=1, size=(112, 84))
    b = peers.make_frames(tmp_path / "b", k=2, repeat=1, size=(112, 84))
    c = peers.make_frames(tmp_path / "c", k=2, repeat=2, size=(112, 84))
    read = lambda fs: [Path(f["path"]).read_bytes() for f in fs.frames]  # noqa: E731
    assert read(a) == read(b)
    assert read(a) != read(c)


def test_request_maps_every_image_in_order(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoProcessor

    template = AutoProcessor.from_pretrained(tiny_model_dir).apply_chat_template
    fs = peers.make_frames(tmp_path, k=3, repeat=0, size=keyframe_size_of(tiny_model_dir))
    req = peers.render_request(template, fs.frames, "Where are my keys?", 5)
    assert req["prompt"].count(peers.IMAGE_TAG) == 3
    assert req["prompt"].index("Frame 1 (t=1.0 s)") < req["prompt"].index("Frame 3 (t=5.0 s)")
    assert req["prompt"].rstrip().endswith("assistant")
    assert [p["image"] for p in req["parts"] if "image" in p] == [f["path"] for f in fs.frames]
    assert "Question: Where are my keys?" in "".join(p.get("text", "") for p in req["parts"])


def test_verdict_compares_equal_precision_only() -> None:
    rows = [
        {"runtime": "ours onnx", "precision": "int8", "k": 16, "followup_ttft_ms": 50.0, "status": "ok"},
        {"runtime": "ours torch", "precision": "fp32", "k": 16, "followup_ttft_ms": 80.0, "status": "ok"},
        {
            "runtime": "llama.cpp reuse",
            "precision": "fp32",
            "k": 16,
            "followup_ttft_ms": 40.0,
            "status": "ok",
        },
        {
            "runtime": "OpenVINO GenAI",
            "precision": "int8",
            "k": 16,
            "followup_ttft_ms": 500.0,
            "status": "ok",
        },
        {"runtime": "ONNX Runtime GenAI", "precision": "fp32", "status": "not supported: x"},
    ]
    verdict = {v["metric"]: v for v in peers.followup_verdict(rows, [16])}
    fp32 = verdict["follow-up TTFT, K=16, fp32: best peer / ours"]
    assert fp32["value"] == 0.5 and fp32["met"] is False
    int8 = verdict["follow-up TTFT, K=16, int8: best peer / ours"]
    assert int8["value"] == 10.0 and int8["met"] is True
    assert len(verdict) == 2  # no int4 rows: no verdict invented


def test_missing_venv_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(peers.PeersUnavailableError, match="make bench-peers"):
        peers.peers_python(tmp_path / "nope")


def test_cli_exits_2_without_the_peers_venv(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "egovlm.cli",
            "bench",
            "peers",
            "--out",
            str(tmp_path),
            "--venv",
            str(tmp_path / "v"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 2, res.stderr
    assert "make bench-peers" in res.stderr


@pytest.mark.slow
def test_worker_protocol_with_our_engine(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The worker answers reset/ask over JSON lines and its greedy answer is the engine's."""
    from transformers import AutoProcessor

    template = AutoProcessor.from_pretrained(tiny_model_dir).apply_chat_template
    fs = peers.make_frames(tmp_path, k=2, repeat=0, size=keyframe_size_of(tiny_model_dir))
    rt = peers.Runtime(
        "ours torch", "fp32", "main", ["--runtime", "ours-torch", "--model", str(tiny_model_dir)]
    )
    w = peers.Worker(rt, Path(sys.executable), threads=1, n_ctx=2048, log=tmp_path / "w.log")
    try:
        assert w.ready.get("ready"), w.ready
        assert w.call({"op": "reset", "capacity": 2}) == {"ok": True}
        first = w.call(peers.render_request(template, fs.frames, peers.QUESTIONS[0], 4))
        follow = w.call(peers.render_request(template, fs.frames, peers.QUESTIONS[1], 4))
        assert first["ttft_ms"] > 0 and 1 <= first["n_new"] <= 4
        # The follow-up prefills only the question: fewer tokens than the first, which built the prefix.
        assert follow["prefill_tokens"] < 60
        bad = w.call({"op": "nope"})
        assert "unknown op" in bad["error"]
        assert w.peak_rss_mb() and w.peak_rss_mb() > 50
    finally:
        w.close()
    assert w.proc.returncode == 0


@pytest.mark.slow
def test_quick_run_against_the_peers(tmp_path: Path) -> None:
    venv = peers.DEFAULT_VENV
    try:
        peers.peers_python(venv)
    except peers.PeersUnavailableError as e:
        pytest.skip(f"peers venv absent: {e}")
    report = peers.run(tmp_path / "bench", quick=True, work=tmp_path / "work", echo=lambda s: None)
    data = json.loads((tmp_path / "bench" / "peers.json").read_text())
    assert (tmp_path / "bench" / "peers.md").is_file() and (tmp_path / "bench" / "peers.png").is_file()
    ok = [r for r in data["rows"] if r["status"] == "ok"]
    torch_row = next(r for r in ok if r["runtime"] == "ours torch")
    assert torch_row["agree_with_torch"] == 1.0
    assert torch_row["followup_ttft_ms"] < torch_row["first_ttft_ms"]
    measured_peers = {r["runtime"].split()[0] for r in ok if not r["runtime"].startswith("ours")}
    assert len(measured_peers) >= 2, report.markdown()
    for r in ok:
        assert r["first_ttft_ms"] > 0 and r["peak_rss_mb"] > 0
    failed = [r for r in data["rows"] if r["status"] != "ok"]
    assert all(r["status"].startswith("not supported: ") for r in failed)
