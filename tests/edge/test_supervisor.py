"""The reconnect supervisor shared by camera ingest and the microphone, the shared URI splitter,
and the HTTP client without a server: no GStreamer needed."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from egovlm.edge import client
from egovlm.edge.sources import SourceError, split_uri
from egovlm.edge.supervisor import Backoff, PipelineSupervisor


class BuildError(ValueError):
    pass


def make(outcomes: list[str], *, live: bool = True, loop: bool = False, **backoff: float | int | None):
    """A supervisor whose pipelines are ints and whose plays return ``outcomes`` in turn (then
    block until stopped)."""
    built: list[int] = []
    torn: list[int] = []
    names: list[str] = []
    sup: PipelineSupervisor[int]

    def build() -> int:
        built.append(len(built))
        return built[-1]

    def play(p: int) -> str:
        names.append(threading.current_thread().name)
        if outcomes:
            outcome = outcomes.pop(0)
            if outcome == "raise":
                raise RuntimeError("bug on the frame path")
            if outcome == "error":
                sup.note_error("src: cannot open rtsp://admin:hunter22@cam/live (hunter22)")
            return outcome
        while not sup.stop_requested:
            time.sleep(0.01)
        return "stopped"

    sup = PipelineSupervisor(
        uri="rtsp://admin:***@cam/live",
        what="ingest",
        thread_name="egovlm-test",
        build=build,
        play=play,
        teardown=torn.append,
        build_error=BuildError,
        backoff=Backoff(**backoff),  # type: ignore[arg-type]
        live=live,
        loop=loop,
        redact=lambda text: text.replace("hunter22", "***"),
        log=logging.getLogger("egovlm.edge.test"),
    )
    return sup, built, torn, names


def test_backoff_doubles_up_to_its_cap_and_counts_restarts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="egovlm.edge.test")
    sup, built, torn, names = make(
        ["error", "stall", "error", "error"], initial_s=0.01, max_s=0.03, max_restarts=None
    )
    sup.start()
    deadline = time.monotonic() + 5
    while len(names) < 5 and time.monotonic() < deadline:  # the fifth pipeline plays until stopped
        time.sleep(0.01)
    sup.stop()
    assert sup.waits() == [("error", 0.01), ("stall", 0.02), ("error", 0.03), ("error", 0.03)]
    c = sup.counters()
    assert c.restarts == 4 and c.errors == 3 and c.state == "stopped"
    assert c.last_error == "src: cannot open rtsp://admin:***@cam/live (***)"
    assert built == torn == [0, 1, 2, 3, 4]  # every pipeline built is torn down
    assert set(names) == {"egovlm-test"} and sup.wait_done(1)
    assert "hunter22" not in caplog.text
    assert "rtsp://admin:***@cam/live: error; restarting in 0.0 s" in caplog.text


def test_a_finite_source_ends_at_eos_a_looping_one_restarts_at_once() -> None:
    sup, *_ = make(["eos"], live=False, initial_s=1.0)
    sup.start(first=7)
    assert sup.wait_done(5) and sup.counters().state == "ended" and sup.counters().restarts == 0
    sup, *_ = make(["eos", "eos"], live=False, loop=True, initial_s=1.0)
    sup.start()
    deadline = time.monotonic() + 5
    while len(sup.waits()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    sup.stop()
    assert sup.waits() == [("eos", 0.0), ("eos", 0.0)]


def test_it_gives_up_after_max_restarts_and_survives_a_bug_and_a_failed_build(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup, *_ = make(["raise", "error", "error"], initial_s=0.0, max_s=0.0, max_restarts=2)
    sup.start()
    assert sup.wait_done(5)
    c = sup.counters()
    assert c.state == "failed" and c.restarts == 2 and c.errors == 3
    assert "ingest failed: RuntimeError: bug on the frame path" in [r.getMessage() for r in caplog.records][1]
    assert "giving up after 2 restarts" in caplog.text

    def failing_build() -> int:
        raise BuildError("no such element")

    sup2, *_ = make([], initial_s=0.0, max_s=0.0, max_restarts=1)
    sup2._build = failing_build
    sup2.start()
    assert sup2.wait_done(5)
    assert [why for why, _ in sup2.waits()] == [
        "no pipeline"
    ] and sup2.counters().last_error == "no such element"


def test_split_uri_masks_credentials_and_checks_the_scheme_table() -> None:
    table: dict[str, tuple[str, ...] | None] = {"cam": ("fps",), "net": None}
    p = split_uri(
        "net://user:s3cret-pw@host/a%20b?token=abc&x=1", table, SourceError, what="thing", examples="cam://"
    )
    assert p.shown == "net://user:***@host/a%20b?token=***&x=1" and p.scheme == "net" and p.params == {}
    assert "s3cret-pw" in p.secrets and p.hostname == "host"
    assert split_uri("CAM://?fps=1&fps=5", table, SourceError, what="thing", examples="cam://").params == {
        "fps": "5"
    }
    for bad, match in (
        ("cam", "thing 'cam' is not a URI; use cam://"),
        ("x://pw:hunter2@h", r"x://pw:\*\*\*@h: unknown thing scheme 'x'; expected one of cam, net"),
        ("cam://?gain=2", r"unknown parameter\(s\) \['gain'\]; cam:// accepts \['fps'\]"),
        ("net://[::1", "not a valid URI"),
    ):
        with pytest.raises(SourceError, match=match):
            split_uri(bad, table, SourceError, what="thing", examples="cam://")


def test_the_client_raises_a_clear_error_without_a_server() -> None:
    with pytest.raises(client.ServerUnreachableError, match="no server at http://127.0.0.1:9: start one"):
        client.ask("what?", "http://127.0.0.1:9", timeout=2)
    with pytest.raises(client.ServerUnreachableError, match="--voice"):
        client.ask_audio(__import__("pathlib").Path(__file__), "http://127.0.0.1:9", timeout=2)
    with pytest.raises(client.ClientError):
        client.pause("http://127.0.0.1:9")


def test_stop_says_whether_the_thread_ended_within_its_timeout() -> None:
    """A teardown stuck past the stop timeout (GStreamer refusing to go to NULL, a consumer inside
    native code) is reported, not hidden: the owner must not let the interpreter shut down over it."""
    release = threading.Event()
    sup, *_ = make([])
    sup._teardown = lambda p: release.wait(30)
    sup.start()
    time.sleep(0.1)
    assert sup.stop(timeout=0.2) is False and sup.running
    release.set()
    assert sup.stop(timeout=5) is True and not sup.running
