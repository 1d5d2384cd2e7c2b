"""The edge demo (``make demo``): the runtime on EgoSynth's live stream, a few questions, answers
with the keyframes they cite and where the time went.

:func:`run_demo` starts the real runtime (GStreamer ``synth://`` source → keyframe selector →
buffer → cached model state), waits until the buffer holds a few keyframes and the synthetic
wearer has picked something up, then asks "What did I pick up most recently?" twice, as a
multiple-choice question and as an open one (answered in words), with the ground truth from the
live stream's events printed beside the model's answer and whether it was right
(:func:`egovlm.contract.answers_match`). With a random-init offline model the answers are noise;
the point is the path and the timings. ``interactive=True`` then keeps serving the web page
until Ctrl-C.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from egovlm.contract import answers_match
from egovlm.edge.runtime import EdgeRuntime, RuntimeOptions, build_runtime

log = logging.getLogger("egovlm.edge.demo")

DEMO_SOURCE = "synth://?fps=10&size=320x240&seed=0"
Printer = Callable[[str], None]
LAST_PICKUP = "What did I pick up most recently?"
DemoQuestion = tuple[str, dict[str, str] | None, str | None]


def _object_names(limit: int = 12) -> list[str]:
    from egovlm.synth.objects import CATALOGUE

    return [k.name for k in CATALOGUE][:limit]


def demo_questions(events: list[Any]) -> list[DemoQuestion]:
    """(question, options, ground truth) from the events seen so far: the last pick-up as a
    multiple-choice question (truth: its letter) and as an open one (truth: the object in words, as
    EgoSynth's open questions name it, "the yellow banana"). Before any pick-up only the open
    question is asked, without a ground truth."""
    picked = [e for e in events if getattr(e, "action", "") == "pick_up"]
    if not picked:
        return [(LAST_PICKUP, None, None)]
    last = picked[-1].object
    others = [n for n in _object_names() if n != last][:4]
    names = [last, *others]
    order = sorted(range(5), key=lambda i: (i * 7 + len(last)) % 5)  # fixed shuffle, not always "A"
    letters = "ABCDE"
    options = {letters[j]: names[i] for j, i in enumerate(order)}
    correct = next(letter for letter, name in options.items() if name == last)
    return [(LAST_PICKUP, options, correct), (LAST_PICKUP, None, f"the {last}")]


def verdict(answer: str | None, truth: str, options: dict[str, str] | None) -> str:
    """The ground-truth line printed under an answer: the truth and whether the answer matched it."""
    shown = f"{truth}. {options[truth]}" if options else truth
    right = "right" if answers_match(answer, truth) else "wrong"
    return f"ground truth: {shown}  ({right})"


def run_demo(
    model_dir: str | Path,
    *,
    source: str = DEMO_SOURCE,
    profile: str = "cpu",
    min_keyframes: int = 4,
    warmup_timeout_s: float = 60.0,
    max_new_tokens: int = 48,
    interactive: bool = False,
    host: str = "127.0.0.1",
    port: int = 8000,
    out: Printer = print,
) -> list[dict[str, Any]]:
    """Run the demo; return the answers (API form) for callers that want to check them."""
    from egovlm.edge.client import format_answer_report
    from egovlm.edge.server import answer_response
    from egovlm.edge.serving import serve

    out(f"loading {model_dir} (profile {profile}) and starting {source}")
    runtime = build_runtime(
        model_dir, source, profile=profile, max_new_tokens=max_new_tokens, options=RuntimeOptions()
    )
    runtime.start()
    answers: list[dict[str, Any]] = []
    try:
        _warm_up(runtime, min_keyframes, warmup_timeout_s, out)
        assert runtime.ingest is not None
        events = [e for _, batch in runtime.ingest.synth_events() for e in batch]
        for question, options, truth in demo_questions(events):
            out("")
            out(f"Q: {question}" + ("" if options else "  (open: answered in words)"))
            for letter, text in (options or {}).items():
                out(f"   {letter}. {text}")
            answer = runtime.ask(question, options)
            view = answer_response(answer, f"demo-{len(answers) + 1}", "", max_new_tokens).model_dump()
            out(format_answer_report(view))
            if truth is not None:
                out(verdict(answer.parsed.answer, truth, options))
            answers.append(view)
        _summary(runtime, answers, out)
    except BaseException:
        runtime.stop()
        raise
    if not interactive:
        runtime.stop()
        return answers
    out("")
    out(f"web UI: http://{host}:{port}/  (Ctrl-C to stop)")
    serve(runtime, host, port, token=None)  # stops the runtime when it returns
    return answers


def _warm_up(runtime: EdgeRuntime, min_keyframes: int, timeout_s: float, out: Printer) -> None:
    """Wait for keyframes, a warm model state and (briefly) for a first synthetic pick-up."""
    t0 = time.monotonic()
    if not runtime.wait_for_keyframes(min_keyframes, timeout_s):
        raise RuntimeError(f"no {min_keyframes} keyframes after {timeout_s:.0f} s: {runtime.status_line()}")
    assert runtime.ingest is not None
    deadline = time.monotonic() + 10.0
    while not _picked(runtime) and time.monotonic() < deadline:
        time.sleep(0.2)
    runtime.engine.wait_until_ready(timeout=30.0)
    out(f"warm after {time.monotonic() - t0:.1f} s: {runtime.status_line()}")


def _picked(runtime: EdgeRuntime) -> bool:
    assert runtime.ingest is not None
    return any(
        getattr(e, "action", "") == "pick_up" for _, batch in runtime.ingest.synth_events() for e in batch
    )


def _summary(runtime: EdgeRuntime, answers: list[dict[str, Any]], out: Printer) -> None:
    if not answers:
        return
    ttft = [a["latency"]["ttft_ms"] for a in answers]
    tok_s = [a["latency"]["decode_tok_s"] for a in answers]
    st = runtime.ingest_stats()
    out("")
    out(
        f"{len(answers)} answers: TTFT {min(ttft):.0f}-{max(ttft):.0f} ms, "
        f"decode {min(tok_s):.0f}-{max(tok_s):.0f} tok/s, "
        f"{sum(a['format_ok'] for a in answers)} followed the answer format"
    )
    if st is not None:
        out(
            f"ingest: {st.frames_received} frames at {st.fps_in:.1f} fps, {st.frames_dropped} dropped, "
            f"{st.keyframes_taken} keyframes taken, {len(runtime.engine.buffer)} in the buffer"
        )
