"""A long run under load: does the runtime stay up, stay small and stay fast?

The runtime (the offline tiny Qwen2.5-VL by default) runs on the synthetic live stream with its
HTTP server on 127.0.0.1 and a voice assistant (Whisper tiny.en, espeak-ng answers to a null
sink); ``clients`` threads, each with its own ``httpx.Client``, send requests in a bounded loop:
one in flight per client, a timeout on every request and a random think time between them, until
the deadline. The request mix (:data:`MIX`): multiple-choice and open ``/v1/ask`` questions,
``use_cache: false`` questions (the whole prompt prefilled from scratch: the path that once
aborted the server), OpenAI-style ``/v1/chat/completions`` and spoken questions uploaded to
``/v1/ask/audio`` (espeak-ng speech made once at start; half are also spoken back). A sampler
thread records every ``sample_s`` the process's RSS, threads (``/proc/self/status``) and open
file descriptors (``/proc/self/fd``), the ingest counters, and polls ``/healthz`` and
``/metrics`` over HTTP. Server, runtime and clients share one process, so
the resource numbers include the clients' (constant) share.

Definitions (the report repeats them in its notes):

* warm-up: the first ``warmup_minutes`` of the soak (default ``min(5, minutes / 6)``). Its
  requests count as requests and errors, not towards growth or latency stability.
* W = min(``window_s``, (end − warm-up end) / 3): the compare window.
* ``rss_growth`` = median RSS over the last W of the soak / median RSS over the first W after
  warm-up − 1; ``fd_growth`` and ``thread_growth`` are differences of medians over the same
  windows (counts).
* ``p95_ratio`` = p95 latency of the requests started in the second half of the time after
  warm-up / that of the first half (latency = the client's wall time for the whole request).

Verdict: fail on any request error (a non-200 answer, 429 included: with one question in flight
per client and ``max_pending >= clients`` the runtime must never be busy; a timeout; a
malformed body; a spoken question not transcribed), a failed poll (HTTP error or ``/healthz``
not ``ok``), an ingest error, ``rss_growth > rss_bound`` (0.05), ``fd_growth > fd_bound`` (8),
``thread_growth > thread_bound`` (4), ``p95_ratio > p95_bound`` (1.5; 0 disables), fewer than 2
resource samples or no request after warm-up, or an interrupted run.

    egovlm bench soak --minutes 30 --clients 4 --out bench      # the issue's done-when run
    egovlm bench soak --minutes 1 --clients 4 --out /tmp/soak   # a smoke run
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.benchmarks.report import Report, percentiles

SOURCE = "synth://?fps=10&size=320x240&seed=0"
MC_QUESTIONS: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "What did I pick up last?",
        {"A": "a red cup", "B": "the keys", "C": "a book", "D": "the phone", "E": "nothing"},
    ),
    ("Which room am I in?", {"A": "the kitchen", "B": "an office", "C": "a hallway", "D": "outside"}),
    ("What is in front of me right now?", {"A": "a table", "B": "a door", "C": "a shelf"}),
)
OPEN_QUESTIONS: tuple[str, ...] = (
    "What am I doing right now?",
    "Where did I put the keys?",
    "Describe what changed in the last minute.",
    "What colour is the object I held last?",
)
SPOKEN_QUESTIONS: tuple[str, ...] = ("What did I pick up last?", "Where did I put the keys?")
# Request kinds and their share of the requests (each client draws one per request).
MIX: tuple[tuple[str, float], ...] = (
    ("mc", 0.25),  # /v1/ask with lettered options
    ("open", 0.2),  # /v1/ask, free text
    ("nocache", 0.15),  # /v1/ask with use_cache: false
    ("chat", 0.25),  # /v1/chat/completions (options typed as lines, like a chat client)
    ("audio", 0.15),  # /v1/ask/audio, a spoken question (WAV)
)


@dataclass(frozen=True)
class Bounds:
    """Limits the verdict checks (growth measured after warm-up, see the module docstring)."""

    rss_growth: float = 0.05  # fraction
    fd_growth: int = 8  # open file descriptors
    thread_growth: int = 4  # threads
    p95_ratio: float = 1.5  # second-half p95 / first-half p95; 0: not judged


@dataclass(frozen=True)
class Sample:
    """The process's resources and the ingest counters at ``t`` seconds into the soak."""

    t: float
    rss_mb: float
    fds: int
    threads: int
    frames_received: int = 0
    frames_dropped: int = 0


@dataclass(frozen=True)
class Request:
    """One question: started ``t`` seconds into the soak, by client ``client``."""

    t: float
    client: int
    kind: str  # one of MIX: "mc" | "open" | "nocache" | "chat" | "audio"
    status: int | None  # HTTP status; None when no response came back
    latency_ms: float  # client wall time, request sent → body read
    ttft_ms: float | None = None  # the server's time to first token
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Verdict:
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    numbers: dict[str, Any]
    reasons: list[str]

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass
class SoakReport(Report):
    """A :class:`Report` that also carries the raw resource samples and the verdict."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.verdict.get("passed"))

    @property
    def reasons(self) -> list[str]:
        return list(self.verdict.get("reasons", []))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "verdict": self.verdict, "samples": self.samples}

    def markdown(self) -> str:
        head = "PASS" if self.passed else "FAIL: " + "; ".join(self.reasons)
        return super().markdown() + f"\nVerdict: **{head}**\n"


# --- measurements ---------------------------------------------------------------------------------


def process_resources() -> tuple[float, int, int]:
    """(RSS MB, open file descriptors, threads) of this process, from /proc (Linux)."""
    fields: dict[str, str] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    return rss_mb, len(os.listdir("/proc/self/fd")), int(fields["Threads"])


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def _p50_p95(values: Sequence[float]) -> tuple[float | None, float | None]:
    return percentiles(values) if len(values) else (None, None)


def _first(errors: Sequence[str]) -> str:
    return f" (first: {errors[0][:160]})" if errors else ""


def summarise(
    requests: Sequence[Request],
    samples: Sequence[Sample],
    *,
    duration_s: float,
    warmup_s: float,
    window_s: float = 60.0,
    bounds: Bounds | None = None,
    ingest: Mapping[str, Any] | None = None,
    poll_errors: Sequence[str] = (),
    interrupted: bool = False,
) -> Verdict:
    """Per-window rows, the summary table and the verdict, from what the soak recorded (pure)."""
    bounds = bounds or Bounds()
    reasons: list[str] = []
    requests = sorted(requests, key=lambda r: r.t)
    samples = sorted(samples, key=lambda s: s.t)

    rows: list[dict[str, Any]] = []
    n_windows = max(1, int(np.ceil(duration_s / window_s - 1e-9)))
    for i in range(n_windows):
        lo, hi = i * window_s, (i + 1) * window_s
        reqs = [r for r in requests if lo <= r.t < hi or (i == n_windows - 1 and r.t >= hi)]
        smp = [s for s in samples if lo <= s.t < hi or (i == n_windows - 1 and s.t >= hi)]
        p50, p95 = _p50_p95([r.latency_ms for r in reqs if r.ok])
        _, ttft95 = _p50_p95([r.ttft_ms for r in reqs if r.ok and r.ttft_ms is not None])
        rows.append(
            {
                "minute": round(lo / 60, 2),
                "phase": "warm-up" if lo < warmup_s else "soak",
                "requests": len(reqs),
                "errors": sum(not r.ok for r in reqs),
                "p50_ms": p50,
                "p95_ms": p95,
                "ttft_p95_ms": ttft95,
                "rss_mb": _median([s.rss_mb for s in smp]),
                "fds": max((s.fds for s in smp), default=None),
                "threads": max((s.threads for s in smp), default=None),
                "frames_dropped": smp[-1].frames_dropped if smp else None,
            }
        )

    errors = [f"{r.t:.1f}s client {r.client} {r.kind}: {r.error}" for r in requests if not r.ok]
    busy = sum(r.status == 429 for r in requests)
    if errors:
        reasons.append(f"{len(errors)} request errors{_first(errors)}")
    if poll_errors:
        reasons.append(f"{len(poll_errors)} failed polls of /healthz or /metrics{_first(poll_errors)}")
    ingest = dict(ingest or {})
    if ingest.get("errors"):
        reasons.append(f"{ingest['errors']} ingest errors (last: {ingest.get('last_error')})")
    if interrupted:
        reasons.append("interrupted before the deadline")

    after = [s for s in samples if s.t >= warmup_s]
    measured = [r for r in requests if r.t >= warmup_s]
    numbers: dict[str, Any] = {
        "requests": len(requests),
        "requests_after_warmup": len(measured),
        "by_kind": _by_kind(requests),
        "errors": len(errors),
        "busy_429": busy,
        "poll_errors": len(poll_errors),
        "frames_received": ingest.get("frames_received"),
        "frames_dropped": ingest.get("frames_dropped"),
        "ingest_restarts": ingest.get("restarts"),
        "ingest_errors": ingest.get("errors"),
        "first_errors": [*errors[:20], *poll_errors[:20]],
    }
    if not measured:
        reasons.append("no request started after warm-up")
    if len(after) < 2:
        reasons.append(f"{len(after)} resource samples after warm-up: growth cannot be judged")
    else:
        span = max(duration_s, after[-1].t) - warmup_s
        w = min(window_s, span / 3)
        base = [s for s in after if s.t <= warmup_s + w] or after[:1]
        end = [s for s in after if s.t >= after[-1].t - w] or after[-1:]
        rss0, rss1 = _median([s.rss_mb for s in base]), _median([s.rss_mb for s in end])
        fd0, fd1 = _median([s.fds for s in base]), _median([s.fds for s in end])
        th0, th1 = _median([s.threads for s in base]), _median([s.threads for s in end])
        assert rss0 and rss1 is not None and fd0 is not None and fd1 is not None
        assert th0 is not None and th1 is not None
        numbers.update(
            compare_window_s=w,
            rss_after_warmup_mb=rss0,
            rss_end_mb=rss1,
            rss_max_mb=max(s.rss_mb for s in after),
            rss_growth=rss1 / rss0 - 1,
            fds_after_warmup=fd0,
            fds_end=fd1,
            fd_growth=fd1 - fd0,
            threads_after_warmup=th0,
            threads_end=th1,
            thread_growth=th1 - th0,
        )
        if numbers["rss_growth"] > bounds.rss_growth:
            reasons.append(
                f"RSS grew {numbers['rss_growth']:.1%} after warm-up (bound {bounds.rss_growth:.0%})"
            )
        if numbers["fd_growth"] > bounds.fd_growth:
            reasons.append(f"open fds grew by {fd1 - fd0:g} after warm-up (bound {bounds.fd_growth})")
        if numbers["thread_growth"] > bounds.thread_growth:
            reasons.append(f"threads grew by {th1 - th0:g} after warm-up (bound {bounds.thread_growth})")

    mid = warmup_s + (max(duration_s, warmup_s) - warmup_s) / 2
    first = [r.latency_ms for r in measured if r.ok and r.t < mid]
    second = [r.latency_ms for r in measured if r.ok and r.t >= mid]
    p95_a, p95_b = _p50_p95(first)[1], _p50_p95(second)[1]
    all_p50, all_p95 = _p50_p95([r.latency_ms for r in measured if r.ok])
    ratio = p95_b / p95_a if p95_a and p95_b is not None else None
    numbers.update(
        latency_p50_ms=all_p50,
        latency_p95_ms=all_p95,
        p95_first_half_ms=p95_a,
        p95_second_half_ms=p95_b,
        p95_ratio=ratio,
    )
    ratio_ok = None if bounds.p95_ratio <= 0 or ratio is None else ratio <= bounds.p95_ratio
    if bounds.p95_ratio > 0 and ratio is None:
        reasons.append("no answered requests in one half after warm-up: p95 stability cannot be judged")
    elif ratio_ok is False:
        reasons.append(
            f"p95 latency rose {ratio:.2f}x from the first to the second half (bound {bounds.p95_ratio:g}x)"
        )

    def line(metric: str, value: Any, bound: str = "", ok: bool | None = None) -> dict[str, Any]:
        return {"metric": metric, "value": value, "bound": bound, "ok": "" if ok is None else ok}

    g = numbers.get
    summary = [
        line("requests (after warm-up)", f"{len(requests)} ({len(measured)})"),
        line("errors (429 included)", len(errors), "0", not errors),
        line("busy 429", busy),
        line("failed polls", len(poll_errors), "0", not poll_errors),
        line("latency p50 / p95 ms after warm-up", _pair(all_p50, all_p95)),
        line("p95 ms first / second half", _pair(p95_a, p95_b)),
        line(
            "p95 ratio second / first half",
            ratio,
            f"<= {bounds.p95_ratio:g}" if bounds.p95_ratio > 0 else "not judged",
            ratio_ok,
        ),
        line(
            "RSS MB after warm-up / end / max",
            _triple(g("rss_after_warmup_mb"), g("rss_end_mb"), g("rss_max_mb")),
        ),
        _bounded(line, "RSS growth", g("rss_growth"), bounds.rss_growth, f"<= {bounds.rss_growth:.0%}"),
        line("fds after warm-up / end", _pair(g("fds_after_warmup"), g("fds_end"))),
        _bounded(line, "fd growth", g("fd_growth"), bounds.fd_growth, f"<= {bounds.fd_growth}"),
        line("threads after warm-up / end", _pair(g("threads_after_warmup"), g("threads_end"))),
        _bounded(
            line, "thread growth", g("thread_growth"), bounds.thread_growth, f"<= {bounds.thread_growth}"
        ),
        line("frames received / dropped", _pair(g("frames_received"), g("frames_dropped"))),
        line(
            "ingest restarts / errors",
            _pair(g("ingest_restarts"), g("ingest_errors")),
            "errors 0",
            not ingest.get("errors"),
        ),
        *[
            line(
                f"{kind}: requests / errors / p50 / p95 ms",
                f"{k['requests']} / {k['errors']} / {_num(k['p50_ms'])} / {_num(k['p95_ms'])}",
            )
            for kind, k in numbers["by_kind"].items()
        ],
        line("verdict", "pass" if not reasons else "fail", "", not reasons),
    ]
    return Verdict(rows, summary, numbers, reasons)


def _by_kind(requests: Sequence[Request]) -> dict[str, dict[str, Any]]:
    """Per request kind: how many, errors, latency p50/p95 (ms) of the answered ones."""
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({r.kind for r in requests}):
        mine = [r for r in requests if r.kind == kind]
        p50, p95 = _p50_p95([r.latency_ms for r in mine if r.ok])
        out[kind] = {
            "requests": len(mine),
            "errors": sum(not r.ok for r in mine),
            "p50_ms": p50,
            "p95_ms": p95,
        }
    return out


def _num(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _pair(a: Any, b: Any) -> str:
    return f"{_num(a)} / {_num(b)}"


def _triple(a: Any, b: Any, c: Any) -> str:
    return f"{_num(a)} / {_num(b)} / {_num(c)}"


def _bounded(
    line: Callable[..., dict[str, Any]], metric: str, value: Any, bound: float, text: str
) -> dict[str, Any]:
    return line(metric, value, text, None if value is None else value <= bound)


# --- the run ----------------------------------------------------------------------------------------


def _voice(rt: Any) -> tuple[Any, tuple[bytes, ...]]:
    """A voice assistant for the runtime (Whisper tiny.en, espeak-ng to a null sink) and the
    spoken questions the clients upload (espeak-ng, made once)."""
    from egovlm.edge.voice.asr import AsrOptions, Transcriber
    from egovlm.edge.voice.audio import wav_bytes
    from egovlm.edge.voice.pipeline import VoiceAssistant
    from egovlm.edge.voice.tts import AudioOut, EspeakTts, Speaker, spoken_clip

    assistant = VoiceAssistant(rt, Transcriber(AsrOptions(threads=1)), Speaker(EspeakTts(), AudioOut("null")))
    return assistant, tuple(wav_bytes(spoken_clip(q)) for q in SPOKEN_QUESTIONS)


@dataclass(frozen=True)
class Call:
    """One request to send: where, what, and how to read its answer."""

    kind: str
    path: str
    json: dict[str, Any] | None = None
    content: bytes | None = None
    params: dict[str, str] | None = None


def _call(rng: random.Random, speech: Sequence[bytes]) -> Call:
    """A request drawn from :data:`MIX` (``speech``: WAV bytes of spoken questions)."""
    kinds = [k for k, _ in MIX if k != "audio" or speech]
    kind = rng.choices(kinds, weights=[w for k, w in MIX if k in kinds])[0]
    question, options = rng.choice(MC_QUESTIONS)
    if kind == "mc":
        return Call(kind, "/v1/ask", {"question": question, "options": options})
    if kind == "open":
        return Call(kind, "/v1/ask", {"question": rng.choice(OPEN_QUESTIONS)})
    if kind == "nocache":
        return Call(kind, "/v1/ask", {"question": rng.choice(OPEN_QUESTIONS), "use_cache": False})
    if kind == "chat":
        typed = question + "\n" + "\n".join(f"{k}. {v}" for k, v in options.items())
        return Call(kind, "/v1/chat/completions", {"messages": [{"role": "user", "content": typed}]})
    speak = "true" if rng.random() < 0.5 else "false"
    return Call(kind, "/v1/ask/audio", content=rng.choice(speech), params={"speak": speak})


def _answer_problem(call: Call, data: dict[str, Any]) -> tuple[float | None, str | None]:
    """(ttft_ms, problem) read from a 200 answer of ``call``."""
    answer = data["egovlm"] if call.kind == "chat" else data
    ttft = float(answer["latency"]["ttft_ms"])
    if "text" not in answer:
        return ttft, "no text in the answer"
    if call.kind == "chat" and not isinstance(data["choices"][0]["message"]["content"], str):
        return ttft, "no message content in the chat answer"
    if call.kind == "audio" and not data["transcript"]["text"].strip():
        return ttft, "the spoken question was not transcribed"
    return ttft, None


def _send(http: Any, call: Call) -> tuple[int | None, float | None, str | None]:
    """(status, ttft_ms, error) of one request."""
    import httpx

    try:
        if call.content is not None:
            headers = {"content-type": "audio/wav"}
            r = http.post(call.path, content=call.content, params=call.params, headers=headers)
        else:
            r = http.post(call.path, json=call.json)
    except httpx.HTTPError as e:
        return None, None, f"{type(e).__name__}: {e}"
    if r.status_code != 200:
        return r.status_code, None, f"HTTP {r.status_code}: {r.text[:200]}"
    try:
        ttft, problem = _answer_problem(call, r.json())
        return 200, ttft, problem
    except (ValueError, KeyError, TypeError, IndexError) as e:
        return 200, None, f"malformed answer: {type(e).__name__}: {e}"


@dataclass
class _Shared:
    url: str
    t0: float
    deadline: float
    stop: threading.Event
    think_s: tuple[float, float]
    timeout_s: float
    speech: tuple[bytes, ...] = ()
    requests: list[Request] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    poll_errors: list[str] = field(default_factory=list)


def _client(i: int, sh: _Shared, seed: int) -> None:
    import httpx

    rng = random.Random(seed * 1000 + i)
    with httpx.Client(base_url=sh.url, timeout=sh.timeout_s) as http:
        while not sh.stop.is_set() and time.monotonic() < sh.deadline:
            call = _call(rng, sh.speech)
            start = time.monotonic()
            try:
                status, ttft, error = _send(http, call)
            except Exception as e:  # a bug here must show up as an error, not a silently dead client
                status, ttft, error = None, None, f"client: {type(e).__name__}: {e}"
            end = time.monotonic()
            sh.requests.append(
                Request(start - sh.t0, i, call.kind, status, (end - start) * 1000, ttft, error)
            )  # list.append is atomic
            sh.stop.wait(min(rng.uniform(*sh.think_s), max(0.0, sh.deadline - time.monotonic())))


def _poll(http: Any, t: float) -> list[str]:
    import httpx

    problems = []
    try:
        health = http.get("/healthz")
        status = health.json().get("status") if health.status_code == 200 else None
        if status != "ok":
            problems.append(f"{t:.1f}s /healthz: HTTP {health.status_code} {health.text[:160]}")
        metrics = http.get("/metrics")
        if metrics.status_code != 200 or b"egovlm_questions" not in metrics.content:
            problems.append(f"{t:.1f}s /metrics: HTTP {metrics.status_code}")
    except (httpx.HTTPError, ValueError) as e:
        problems.append(f"{t:.1f}s poll: {type(e).__name__}: {e}")
    return problems


def _sampler(sh: _Shared, runtime: Any, sample_s: float) -> None:
    import httpx

    with httpx.Client(base_url=sh.url, timeout=10.0) as http:
        while True:
            now = time.monotonic()
            if now >= sh.deadline:
                return
            rss, fds, threads = process_resources()
            st = runtime.ingest_stats()
            t = now - sh.t0
            sh.samples.append(
                Sample(t, rss, fds, threads, st.frames_received if st else 0, st.frames_dropped if st else 0)
            )
            sh.poll_errors.extend(_poll(http, t))
            if sh.stop.wait(min(sample_s, max(0.0, sh.deadline - time.monotonic()))):
                return


def _progress(sh: _Shared, t: float) -> str:
    recent = [r for r in sh.requests if r.t >= t - 60]
    s = sh.samples[-1] if sh.samples else None
    res = f", RSS {s.rss_mb:.0f} MB, {s.fds} fds, {s.threads} threads" if s else ""
    return (
        f"{t / 60:5.1f} min: {len(sh.requests)} requests ({len(recent)} in the last minute), "
        f"{sum(not r.ok for r in sh.requests)} errors{res}"
    )


def run(
    out: Path,
    model: Path | None = None,
    *,
    minutes: float = 30.0,
    clients: int = 4,
    warmup_minutes: float | None = None,
    max_new_tokens: int = 24,
    think_s: tuple[float, float] = (0.5, 2.0),
    sample_s: float = 5.0,
    window_s: float = 60.0,
    bounds: Bounds | None = None,
    capacity: int = 8,
    max_pending: int | None = None,
    request_timeout_s: float = 60.0,
    threads: int | None = 1,
    seed: int = 0,
    voice: bool = True,
    echo: Callable[[str], None] | None = None,
) -> SoakReport:
    """Soak the runtime and write ``out/soak.json`` + ``.md`` + ``.png``; see the module docstring.
    ``voice`` False: no speech model and no audio uploads in the mix (the other kinds keep their
    relative shares)."""
    import torch

    from egovlm.edge.runtime import RuntimeOptions, build_runtime
    from egovlm.edge.server import create_app
    from egovlm.edge.serving import LoopbackServer

    if minutes <= 0 or clients < 1 or sample_s <= 0 or window_s <= 0:
        raise ValueError("minutes, sample_s and window_s must be > 0 and clients >= 1")
    if not 0 < think_s[0] <= think_s[1]:
        raise ValueError(f"think_s must be 0 < min <= max, got {think_s}")
    bounds = bounds or Bounds()
    warmup_minutes = min(5.0, minutes / 6) if warmup_minutes is None else warmup_minutes
    if not 0 <= warmup_minutes < minutes:
        raise ValueError(f"warm-up ({warmup_minutes} min) must be shorter than the soak ({minutes} min)")
    max_pending = max_pending or max(4, clients)
    say = echo or (lambda _msg: None)
    if threads:
        torch.set_num_threads(threads)
    process_resources()  # fail early off Linux

    duration_s, warmup_s = minutes * 60, warmup_minutes * 60
    report = SoakReport(
        "soak",
        params={
            "minutes": minutes,
            "clients": clients,
            "warmup_minutes": warmup_minutes,
            "think_s": list(think_s),
            "sample_s": sample_s,
            "window_s": window_s,
            "max_new_tokens": max_new_tokens,
            "capacity": capacity,
            "max_pending": max_pending,
            "request_timeout_s": request_timeout_s,
            "torch_threads": threads,
            "source": SOURCE,
            "mix": dict(MIX) if voice else {k: w for k, w in MIX if k != "audio"},
            "model": str(model) if model else "offline tiny Qwen2.5-VL (random init)",
            "bounds": asdict(bounds),
            "seed": seed,
        },
    )
    load_before = os.getloadavg()
    interrupted = False
    elapsed_s = duration_s
    ingest: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="egovlm-bench-soak-") as tmp:
        if model is None:
            from egovlm.models.build import build_model

            model = build_model("tiny", Path(tmp) / "tiny", seed=0)
        rt = build_runtime(
            model,
            SOURCE,
            capacity=capacity,
            max_new_tokens=max_new_tokens,
            options=RuntimeOptions(max_pending=max_pending),
        )
        rt.start()
        workers: list[threading.Thread] = []
        sh: _Shared | None = None
        assistant = None
        try:
            if not rt.wait_for_keyframes(3, timeout=120):
                raise RuntimeError(f"the runtime never held 3 keyframes: {rt.status_line()}")
            speech: tuple[bytes, ...] = ()
            if voice:
                assistant, speech = _voice(rt)
                report.params["asr"] = assistant.transcriber.describe()
            with LoopbackServer(create_app(rt, voice=assistant)) as server:
                t0 = time.monotonic()
                sh = _Shared(
                    server.url, t0, t0 + duration_s, threading.Event(), think_s, request_timeout_s, speech
                )
                workers = [
                    threading.Thread(
                        target=_sampler, args=(sh, rt, sample_s), name="soak-sampler", daemon=True
                    )
                ]
                workers += [
                    threading.Thread(target=_client, args=(i, sh, seed), name=f"soak-client-{i}", daemon=True)
                    for i in range(clients)
                ]
                for w in workers:
                    w.start()
                try:
                    say(
                        f"soak: {minutes:g} min, {clients} clients on {server.url}, "
                        f"warm-up {warmup_minutes:.3g} min"
                    )
                    next_echo = t0 + min(window_s, 60.0)
                    while time.monotonic() < sh.deadline:
                        time.sleep(min(0.5, max(0.0, sh.deadline - time.monotonic())))
                        if time.monotonic() >= next_echo:
                            say(_progress(sh, time.monotonic() - t0))
                            next_echo += min(window_s, 60.0)
                except KeyboardInterrupt:
                    interrupted = True
                    say("soak: interrupted, stopping clients")
                finally:
                    sh.stop.set()
                    elapsed_s = min(duration_s, time.monotonic() - t0)
                    for w in workers:
                        w.join(request_timeout_s + 15)
                st = rt.ingest_stats()
                ingest = st.to_dict() if st else {}
        finally:
            if sh is not None:
                sh.stop.set()
            if assistant is not None:
                assistant.stop()
            rt.stop()

    assert sh is not None
    verdict = summarise(
        list(sh.requests),
        list(sh.samples),
        duration_s=elapsed_s,
        warmup_s=warmup_s,
        window_s=window_s,
        bounds=bounds,
        ingest=ingest,
        poll_errors=list(sh.poll_errors),
        interrupted=interrupted,
    )
    load_after = os.getloadavg()
    report.rows = verdict.rows
    report.summary = verdict.summary
    report.samples = [asdict(s) for s in sh.samples]
    report.verdict = {"passed": verdict.passed, "reasons": verdict.reasons, **verdict.numbers}
    report.notes += [
        f"{clients} clients over HTTP on 127.0.0.1, one request in flight each, "
        f"{think_s[0]:g}-{think_s[1]:g} s think time, {request_timeout_s:g} s timeout; the mix "
        f"{report.params['mix']}: mc/open /v1/ask questions, nocache = use_cache false, chat = "
        "/v1/chat/completions, audio = espeak-ng WAV uploads to /v1/ask/audio (half spoken back to a "
        "null sink). Latency is the client's wall time per request; ttft is the server's time to "
        "first token.",
        f"Warm-up: the first {warmup_minutes:.3g} min (rows marked warm-up). Growth compares the median over "
        f"the last W of the soak with the median over the first W after warm-up, W = min({window_s:g} s, "
        "time after warm-up / 3); fds and threads are differences of those medians.",
        "p95 ratio: p95 latency of requests started in the second half after warm-up / first half.",
        "Server, runtime and clients share one process; RSS, fds and threads are that process's "
        f"(/proc/self), sampled every {sample_s:g} s; rows show the window's median RSS and its max "
        "fds and threads.",
        f"torch intra-op threads: {threads or 'library default'}; load average before/after "
        f"{load_before[0]:.1f}/{load_after[0]:.1f}.",
    ]
    if interrupted:
        report.notes.append("Interrupted (Ctrl-C) before the deadline: the numbers cover the time run.")
    from egovlm.benchmarks.plots import write_plots

    report.write(out)
    write_plots(report, out)
    return report
