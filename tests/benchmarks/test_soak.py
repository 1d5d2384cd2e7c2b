"""bench soak: the verdict logic on synthetic records, the request mix, and a short real soak over
HTTP with every kind of request (questions with and without the cache, chat, spoken uploads)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from egovlm.benchmarks.soak import (
    MIX,
    Bounds,
    Request,
    Sample,
    _call,
    process_resources,
    run,
    summarise,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _samples(duration_s: float = 600.0, step: float = 5.0, rss=lambda t: 800.0, fds=lambda t: 40):
    n = int(duration_s / step) + 1
    return [Sample(i * step, rss(i * step), fds(i * step), 30, 10 * i, i // 10) for i in range(n)]


def _requests(duration_s: float = 600.0, latency=lambda t: 100.0, error_at: float | None = None):
    out = []
    for i in range(int(duration_s)):
        t = float(i)
        err = "HTTP 500: boom" if error_at is not None and t == error_at else None
        out.append(Request(t, i % 4, "mc" if i % 2 else "open", 500 if err else 200, latency(t), 20.0, err))
    return out


def _judge(requests, samples, **kw):
    kw.setdefault("bounds", Bounds())
    return summarise(
        requests,
        samples,
        duration_s=600.0,
        warmup_s=100.0,
        window_s=60.0,
        ingest={"frames_received": 6000, "frames_dropped": 3, "restarts": 0, "errors": 0},
        **kw,
    )


def test_steady_run_passes_with_one_row_per_minute() -> None:
    # RSS climbs during warm-up only, then holds
    v = _judge(_requests(), _samples(rss=lambda t: 700.0 + min(t, 100.0)))
    assert v.passed, v.reasons
    assert [r["minute"] for r in v.rows] == [float(m) for m in range(10)]
    assert [r["phase"] for r in v.rows[:3]] == ["warm-up", "warm-up", "soak"]  # minute 1 starts before 100 s
    assert all(r["requests"] == 60 and r["errors"] == 0 for r in v.rows)
    assert v.numbers["rss_growth"] == pytest.approx(0.0)
    assert v.numbers["rss_after_warmup_mb"] == pytest.approx(800.0)
    assert v.numbers["compare_window_s"] == 60.0
    assert v.numbers["p95_ratio"] == pytest.approx(1.0)
    assert v.summary[-1] == {"metric": "verdict", "value": "pass", "bound": "", "ok": True}


def test_a_single_request_error_fails() -> None:
    v = _judge(_requests(error_at=300.0), _samples())
    assert not v.passed
    assert v.numbers["errors"] == 1
    assert any("1 request errors" in r and "HTTP 500" in r for r in v.reasons)
    assert v.rows[5]["errors"] == 1


def test_busy_429_counts_as_an_error() -> None:
    reqs = _requests()
    reqs[200] = Request(200.0, 0, "mc", 429, 3.0, None, "HTTP 429: busy")
    v = _judge(reqs, _samples())
    assert not v.passed and v.numbers["busy_429"] == 1


def test_rss_growth_beyond_the_bound_fails() -> None:
    # +10 % over the 500 s after warm-up: a leak
    v = _judge(_requests(), _samples(rss=lambda t: 800.0 * (1 + 0.1 * max(0.0, t - 100) / 500)))
    assert not v.passed
    assert v.numbers["rss_growth"] > 0.05
    assert any("RSS grew" in r for r in v.reasons)
    # the same growth passes under a looser bound: the bound is what decides
    assert _judge(
        _requests(),
        _samples(rss=lambda t: 800.0 * (1 + 0.1 * max(0.0, t - 100) / 500)),
        bounds=Bounds(rss_growth=0.2),
    ).passed


def test_fd_leak_and_slower_second_half_fail() -> None:
    v = _judge(_requests(), _samples(fds=lambda t: 40 + int(t // 20)))
    assert not v.passed and any("open fds grew" in r for r in v.reasons)
    v = _judge(_requests(latency=lambda t: 100.0 if t < 350 else 300.0), _samples())
    assert not v.passed and v.numbers["p95_ratio"] == pytest.approx(3.0)
    assert _judge(
        _requests(latency=lambda t: 100.0 if t < 350 else 300.0), _samples(), bounds=Bounds(p95_ratio=0)
    ).passed  # 0: latency stability not judged


def test_cannot_pass_without_data_or_when_interrupted() -> None:
    v = _judge([], _samples(duration_s=50.0))
    assert not v.passed
    assert any("no request" in r for r in v.reasons) and any("resource samples" in r for r in v.reasons)
    v = _judge(_requests(), _samples(), interrupted=True, poll_errors=["12.0s /healthz: HTTP 500"])
    assert any("interrupted" in r for r in v.reasons) and any("failed polls" in r for r in v.reasons)
    v = summarise(
        _requests(),
        _samples(),
        duration_s=600.0,
        warmup_s=100.0,
        ingest={"errors": 2, "last_error": "pipeline died"},
    )
    assert any("2 ingest errors" in r and "pipeline died" in r for r in v.reasons)


def test_the_request_mix_follows_its_weights_and_builds_each_kind() -> None:
    rng = random.Random(0)
    calls = [_call(rng, (b"RIFF-a", b"RIFF-b")) for _ in range(4000)]
    shares = Counter(c.kind for c in calls)
    for kind, weight in MIX:
        assert abs(shares[kind] / len(calls) - weight) < 0.03, (kind, shares)
    by_kind = {c.kind: c for c in calls}
    assert by_kind["nocache"].path == "/v1/ask" and by_kind["nocache"].json["use_cache"] is False
    assert "use_cache" not in by_kind["mc"].json and by_kind["mc"].json["options"]
    chat = by_kind["chat"]
    assert chat.path == "/v1/chat/completions" and "\nA. " in chat.json["messages"][0]["content"]
    audio = [c for c in calls if c.kind == "audio"]
    assert {c.content for c in audio} == {b"RIFF-a", b"RIFF-b"}
    assert {c.params["speak"] for c in audio} == {"true", "false"}
    no_voice = Counter(_call(rng, ()).kind for _ in range(500))
    assert "audio" not in no_voice and set(no_voice) == {k for k, _ in MIX} - {"audio"}


def test_errors_are_counted_per_kind() -> None:
    reqs = _requests(error_at=300.0)
    v = _judge(reqs, _samples())
    kinds = v.numbers["by_kind"]
    assert set(kinds) == {"mc", "open"} and sum(k["requests"] for k in kinds.values()) == len(reqs)
    assert kinds["mc" if 300 % 2 else "open"]["errors"] == 1
    assert any(row["metric"].startswith("open: requests") for row in v.summary)


def test_process_resources_reads_proc() -> None:
    rss_mb, fds, threads = process_resources()
    assert rss_mb > 10 and fds >= 3 and threads >= 1


def test_short_soak_over_http(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak"
    report = run(
        out,
        tiny_model_dir,
        minutes=0.4,
        clients=2,
        warmup_minutes=0.1,
        think_s=(0.1, 0.4),
        sample_s=1.0,
        window_s=8.0,
        max_new_tokens=8,
        bounds=Bounds(p95_ratio=0),  # 18 s is too short to judge latency drift on a shared machine
    )
    data = json.loads((out / "soak.json").read_text())
    assert data["part"] == "soak" and data["params"]["clients"] == 2
    v = data["verdict"]
    assert v["passed"], v["reasons"]
    assert report.passed and v["errors"] == 0 and v["poll_errors"] == 0
    assert v["requests_after_warmup"] > 0 and v["frames_received"] > 0
    kinds = v["by_kind"]
    assert set(kinds) == {k for k, _ in MIX}, kinds  # every kind was sent, and answered
    assert all(k["requests"] > 0 and k["errors"] == 0 for k in kinds.values()), kinds
    assert {"rss_growth", "fd_growth", "thread_growth", "p95_ratio", "rss_after_warmup_mb"} <= set(v)
    rows = data["rows"]
    assert [r["minute"] for r in rows] == [0.0, 0.13, 0.27]  # 24 s in rows of 8 s
    assert sum(r["requests"] for r in rows) == v["requests"] > 0
    assert all(r["rss_mb"] > 0 and r["p95_ms"] > 0 for r in rows)
    assert len(data["samples"]) >= 15
    assert (out / "soak.png").read_bytes().startswith(PNG_MAGIC)
    assert "Verdict: **PASS**" in (out / "soak.md").read_text()
