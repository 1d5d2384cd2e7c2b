"""The harness: percentiles, timing, JSON + Markdown + PNG outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from egovlm.benchmarks.plots import PLOTS, write_plots
from egovlm.benchmarks.report import Report, markdown_table, percentiles, time_calls

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_percentiles_match_definition() -> None:
    samples = list(range(1, 101))  # 1..100
    p50, p95 = percentiles(samples[::-1])  # order must not matter
    assert p50 == pytest.approx(50.5)
    assert p95 == pytest.approx(95.05)  # linear interpolation between the 95th and 96th values
    assert percentiles([3.0]) == (3.0, 3.0)


def test_time_calls_counts_warmup_and_repeats() -> None:
    calls: list[int] = []
    times = time_calls(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and len(times) == 4
    assert all(t >= 0 for t in times)


def test_report_writes_json_and_markdown(tmp_path: Path) -> None:
    report = Report("demo", params={"k": 3}, rows=[{"impl": "a", "ms": 1.2345}, {"impl": "b", "ms": 2500.0}])
    report.summary = [{"metric": "b / a", "value": 2025.1}]
    path = report.write(tmp_path / "out")
    data = json.loads(path.read_text())
    assert data["part"] == "demo" and data["params"] == {"k": 3}
    assert data["rows"][1] == {"impl": "b", "ms": 2500.0}
    assert data["machine"]["cores"] >= 1 and "torch" in data["packages"]
    md = (tmp_path / "out" / "demo.md").read_text()
    assert "| impl | ms |" in md and "| a | 1.23 |" in md and "| b | 2500 |" in md
    assert "b / a" in md


def test_markdown_table_unions_columns() -> None:
    table = markdown_table([{"a": 1}, {"b": "x"}])
    assert table.splitlines()[0] == "| a | b |"
    assert table.splitlines()[2:] == ["| 1 |  |", "|  | x |"]
    assert markdown_table([]) == "(no rows)"


def _fake_reports() -> dict[str, Report]:
    rng = np.random.default_rng(0)
    return {
        "latency": Report(
            "latency",
            rows=[
                {"k": k, "mode": m, "ttft_ms_median": float(rng.uniform(5, 500))}
                for k in (1, 8, 32)
                for m in ("cached", "scratch")
            ],
        ),
        "latency_slice": Report(
            "latency_slice",
            rows=[
                {"k": k, "mode": m, "ttft_ms_median": float(v), "ttft_ms_projected": float(36 * v)}
                for k in (1, 32)
                for m, v in (("cached", rng.uniform(5, 50)), ("scratch", rng.uniform(100, 500)))
            ],
        ),
        "roofline": Report(
            "roofline",
            rows=[
                {
                    "impl": n,
                    "ms_per_token": 2.0 * b,
                    "roofline_ms_per_token": b,
                    "prefill_ms": 3.0 * b,
                    "roofline_prefill_ms": b,
                }
                for n, b in (("torch-fp32", 80.0), ("onnx-int4", 13.0))
            ],
        ),
        "projection": Report(
            "projection",
            rows=[
                {"module": m, "precision": p, "max_tok_s": t}
                for m, p, t in (("Orin Nano", "int4", 29.5), ("Thor", "fp8", 74.8), ("Thor", "int4", 118.0))
            ],
        ),
        "keyframes": Report(
            "keyframes",
            rows=[
                {"method": m, "K": k, "recall": k / 40} for m in ("selector", "uniform") for k in (8, 16, 32)
            ],
        ),
        "ingest": Report(
            "ingest",
            rows=[
                {"resolution": r, "impl": i, "us_per_frame_p50": float(rng.uniform(10, 900))}
                for r in ("640x480", "1280x720")
                for i in ("native", "numpy")
            ],
        ),
        "export": Report(
            "export",
            rows=[
                {"impl": n, "decoder_mb": s, "ms_per_token_p50": 1.0}
                for n, s in (("torch", 2.0), ("onnx", 0.5))
            ],
        ),
        "train": Report("train", rows=[{"step": i, "step_s": 1.5, "generate_s": 0.5} for i in range(1, 4)]),
        "voice": Report(
            "voice",
            rows=[
                {"mode": "upload", "stage": st, "ms_p50": v, "ms_p95": v}
                for st, v in (("asr", 120.0), ("ttft", 40.0))
            ],
        ),
        "soak": Report(
            "soak",
            params={"warmup_minutes": 1.0, "window_s": 60.0},
            rows=[
                {
                    "minute": float(m),
                    "p50_ms": float(rng.uniform(50, 100)),
                    "p95_ms": float(rng.uniform(100, 300)),
                    "rss_mb": 800.0 + m,
                    "fds": 40,
                    "threads": 30,
                }
                for m in range(5)
            ],
        ),
    }


@pytest.mark.parametrize("part", sorted(PLOTS))
def test_each_part_plot_is_a_png(tmp_path: Path, part: str) -> None:
    path = write_plots(_fake_reports()[part], tmp_path)
    assert path == tmp_path / f"{part}.png"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000
    assert not [p for p in tmp_path.iterdir() if p.name != f"{part}.png"]  # no temp file left


def test_unknown_part_has_no_plot(tmp_path: Path) -> None:
    assert write_plots(Report("other", rows=[{"x": 1}]), tmp_path) is None
