"""Running the edge server process: start the runtime, serve it over HTTP until Ctrl-C/SIGTERM,
stop everything.

:func:`serve` is the one place that binds a socket, so the access rules
(:mod:`egovlm.edge.security`) are enforced here for every caller: ``egovlm edge run``, the demo,
scripts. uvicorn handles the signals; the runtime (ingest, engine) and the voice assistant are
stopped in ``serve``'s ``finally``. ``egovlm edge run`` then ends its process with
:func:`exit_process` (without interpreter shutdown: it says why); ``serve`` does so itself,
whoever called it, when a thread is still inside the model or the source after the runtime's
stop timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, NoReturn

from egovlm.edge.security import check_bind, is_loopback

GRACEFUL_SHUTDOWN_S = 5  # how long a stopping server lets open requests finish
# uvicorn's own limits (its defaults made explicit, or chosen for a small device): a request head
# over MAX_HEAD_BYTES gets 400 from h11; beyond MAX_CONNECTIONS open connections (or running
# requests) uvicorn answers 503 at once instead of degrading; an idle keep-alive connection is
# closed after KEEP_ALIVE_S. The request head's deadline is egovlm.edge.http_guards.Deadlines.head_s.
MAX_HEAD_BYTES = 16 * 1024
MAX_CONNECTIONS = 64
KEEP_ALIVE_S = 5

log = logging.getLogger("egovlm.edge")


def setup_logging(level: str) -> None:
    """Readable process logs: time, level, logger, message (``level``: debug | info | warning)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def serve(
    runtime: Any,
    host: str,
    port: int,
    token: str | None,
    log_level: str = "info",
    voice: Any = None,
    mic: str | None = None,
    ptt_key: bool = True,
    deadlines: Any = None,
) -> None:
    """Start the runtime, serve it until Ctrl-C/SIGTERM, stop everything.

    The access rules hold for every caller: a host other than loopback needs ``token``
    (:class:`~egovlm.edge.security.UnsafeBindError` before anything starts), a token must be
    strong (``WeakTokenError``), and a loopback bind answers only loopback ``Host`` names.
    ``deadlines``: a :class:`egovlm.edge.http_guards.Deadlines` (default: its defaults) for the
    request head (a protocol-level timer: uvicorn has none) and body. A camera that cannot start
    raises :class:`~egovlm.edge.sources.SourceError`, a microphone that cannot
    :class:`~egovlm.edge.voice.audio.AudioSourceError` (the runtime is stopped first)."""
    import uvicorn

    from egovlm.edge.http_guards import Deadlines, head_deadline_protocol, host_name
    from egovlm.edge.server import LOOPBACK_HOSTS, create_app

    check_bind(host, token)
    token = token if token and token.strip() else None
    deadlines = deadlines if deadlines is not None else Deadlines()
    runtime.start()
    try:
        if voice is not None and mic:
            listen(voice, mic, ptt_key)
        where = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
        loopback = is_loopback(host)
        hosts = LOOPBACK_HOSTS | {host_name(host)} if loopback else None  # 127.0.0.2 is loopback too
        if token:
            log.info("bearer token required on every route but /, /static/ and /healthz (bound to %s)", host)
            log.info("web UI: %s#token=<your token>", where)
        else:
            log.info("web UI: %s  (API: POST %sv1/ask, OpenAI: %sv1)", where, where, where)
        if not loopback:
            log.warning(
                "bound to %s: reachable from the network; every API call needs the bearer token", host
            )
        app = create_app(
            runtime,
            token,
            voice=voice,
            allowed_hosts=hosts,
            body_timeout_s=deadlines.body_stall_s,
            body_deadline_s=deadlines.body_total_s,
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            log_config=None,
            # uvicorn otherwise waits for every open connection, so a long streamed answer would
            # hold up SIGTERM; the runtime's stop() cancels answers still running after this.
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            http=head_deadline_protocol(deadlines.head_s),  # h11 + the head deadline uvicorn lacks
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=KEEP_ALIVE_S,
            ws="none",  # no WebSocket routes: upgrade requests are not handed to the app
        )
        _server_class()(config).run()  # returns on SIGINT/SIGTERM after a graceful shutdown
    finally:
        log.info("stopping: %s", runtime.status_line())
        if voice is not None:
            voice.stop()
        if runtime.stop() is False:
            _exit_now(sys.exc_info()[1])


def _exit_now(failure: BaseException | None) -> NoReturn:
    """:func:`exit_process` when :meth:`EdgeRuntime.stop` timed out with a thread still inside
    the model (an answer that wrote no text to be cancelled at, a prefix chunk still computing) or
    the source (its log names which): exit code 0, or 1 with ``failure`` (the exception serving
    ended with) logged."""
    if failure is not None:
        log.error("serving failed", exc_info=failure)
    log.warning("a thread did not stop in time: exiting without interpreter shutdown")
    exit_process(0 if failure is None else 1)


def exit_process(code: int) -> NoReturn:
    """End the process at once with ``code``, after flushing the logs and standard streams,
    skipping interpreter shutdown. For a process whose work is stopped (``edge run`` after
    :func:`serve` returned): interpreter shutdown ends the daemon threads still alive (ours past
    a stop timeout, or any library's) by unwinding them from where they stand the next time they
    take the GIL. On CPython before 3.14, a thread that released the GIL inside native code
    behind a C++ guard (torch's pybind11, OpenCV) is unwound through that guard's destructor,
    which calls std::terminate: the process dies with SIGABRT ("terminate called without an
    active exception") instead of exiting (pytorch/pytorch#38228; CPython 3.14 parks such
    threads instead, gh-87135). JetPack's Python is 3.10. The process holds nothing that needs
    finalizers: the camera, the microphone and the socket are closed, its state is in memory."""
    alive = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    log.debug("exiting (code %d); threads still alive: %s", code, ", ".join(alive) or "none")
    logging.shutdown()  # flush every handler
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def listen(voice: Any, mic: str, ptt_key: bool) -> None:
    """Start the microphone (and the Enter key as push-to-talk when a terminal is attached).
    Raises :class:`~egovlm.edge.voice.audio.AudioSourceError` for a microphone that cannot run."""
    voice.listen(mic)
    if ptt_key and sys.stdin is not None and sys.stdin.isatty():
        from egovlm.edge.voice.keyboard import start_keyboard_ptt

        start_keyboard_ptt(voice, sys.stdin)


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises the signal that stopped it once it has shut down, so a bare server
        exits as if killed; here the runtime must still stop ingest and the engine (``serve``'s
        ``finally``) and the process exit 0, so the captured signals are consumed instead."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                captured = getattr(self, "_captured_signals", None)
                if captured:
                    log.info("signal %s: shutting down", captured[0])
                    captured.clear()

    return Server


class LoopbackServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a background thread of this process, on a socket
    bound before it starts (so ``url`` is known at once), for the benchmarks and the tests that
    need a real socket. Loopback only: nothing here exposes a server (that is :func:`serve`)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="egovlm-loopback-http", daemon=True
        )

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.__exit__()
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self._sock.close()
