"""Who can reach the runtime, and what it will serve:

* a bind beyond loopback needs a bearer token, checked in ``serve`` (the one place that binds,
  whoever calls it: ``edge run``, the demo, a script) before anything starts, and the start log
  says the token is required; a loopback bind answers only loopback ``Host`` names (DNS
  rebinding: a web page whose domain resolves to 127.0.0.1 cannot talk to the camera);
* the token is compared with ``hmac.compare_digest`` (constant time), for every guarded route;
* CORS stays closed: no ``Access-Control-Allow-*`` header for another origin, preflights refused;
* no URL serves a file outside the runtime's web folder (``..``, encoded ``..``, backslashes,
  absolute paths, over a real socket so nothing normalises the path on the way), and keyframe
  URLs take integer ids only.
"""

from __future__ import annotations

import hmac
import http.client
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import egovlm.edge.cli as edge_cli
from egovlm.edge.cli import UnsafeBindError, check_bind, serve
from egovlm.edge.runtime import EdgeRuntime
from egovlm.edge.server import WEB_DIR, create_app
from tests.edge.edge_fakes import ServerThread, scripted_engine

pytestmark = pytest.mark.timeout(120)

TOKEN = "s3cret-token"
GUARDED = [
    ("GET", "/v1/keyframes", None),
    ("GET", "/v1/keyframes/1.jpg", None),
    ("POST", "/v1/ask", {"question": "q"}),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}]}),
    ("GET", "/metrics", None),
    ("GET", "/v1/voice", None),
]


def warm_runtime() -> EdgeRuntime:
    """The real runtime and engine around the scripted model, three keyframes in (no camera)."""
    rt = EdgeRuntime(scripted_engine(capacity=6), None)
    rt.start()
    rng = np.random.default_rng(1)
    for i in range(3):
        rt.engine.add_keyframe(1.0 + i, rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    assert rt.wait_for_keyframes(3, timeout=30), rt.status_line()
    return rt


@pytest.fixture(scope="module")
def runtime() -> Iterator[EdgeRuntime]:
    rt = warm_runtime()
    try:
        yield rt
    finally:
        rt.stop()


# --- binding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_binds_need_no_token(host: str) -> None:
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "camera.local", ""])
@pytest.mark.parametrize("token", [None, "", "   "])
def test_other_binds_need_a_token(host: str, token: str | None) -> None:
    with pytest.raises(
        UnsafeBindError, match="exposes the camera and the model to the network: pass --token"
    ):
        check_bind(host, token)
    check_bind(host, TOKEN)


class StartRecorder:
    """Just enough runtime for ``serve`` when the server never really runs."""

    def __init__(self) -> None:
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def status_line(self) -> str:
        return "status"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20"])
def test_serve_itself_refuses_an_open_bind_without_a_token(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only the CLI: any caller of serve (run_demo(host=...), scripts) hits the check,
    before the runtime starts or a socket is bound."""
    monkeypatch.setattr(edge_cli, "_server_class", lambda: pytest.fail("must not get as far as binding"))
    rt = StartRecorder()
    with pytest.raises(UnsafeBindError, match=f"binding {host} exposes"):
        serve(rt, host, 8000, None)
    with pytest.raises(UnsafeBindError):
        serve(rt, host, 8000, "  ")
    assert not rt.started


def served_app(monkeypatch: pytest.MonkeyPatch, check: Callable[[Any], None]) -> dict[str, Any]:
    """Make ``serve`` hand its uvicorn config to ``check`` instead of binding a socket."""
    seen: dict[str, Any] = {}

    class FakeServer:
        def __init__(self, config: Any) -> None:
            self.config = config

        def run(self) -> None:
            seen["host"], seen["app"] = self.config.host, self.config.app
            check(self.config.app)

    monkeypatch.setattr(edge_cli, "_server_class", lambda: FakeServer)
    return seen


def test_an_open_bind_with_a_token_says_so_and_requires_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def check(app: Any) -> None:
        with TestClient(app, base_url="http://camera.local:8000") as c:  # any Host: the token guards
            assert c.get("/v1/keyframes").status_code == 401
            ok = c.get("/v1/keyframes", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200 and ok.json()["keyframes"]
            assert c.get("/healthz").status_code == 200

    seen = served_app(monkeypatch, check)
    with caplog.at_level(logging.INFO, logger="egovlm.edge"):
        serve(warm_runtime(), "0.0.0.0", 8123, TOKEN)  # serve stops it
    assert seen["host"] == "0.0.0.0" and "app" in seen
    text = caplog.text
    assert "bearer token required on /v1/* and /metrics (bound to 0.0.0.0)" in text
    assert "bound to 0.0.0.0: reachable from the network" in text
    assert TOKEN not in text


@pytest.mark.parametrize("bind", ["127.0.0.1", "localhost", "127.0.0.2"])
def test_a_loopback_bind_answers_only_loopback_host_names(monkeypatch: pytest.MonkeyPatch, bind: str) -> None:
    def check(app: Any) -> None:
        with TestClient(app, raise_server_exceptions=False) as c:
            for host in ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", f"{bind}:8000"]:
                assert c.get("/healthz", headers={"host": host}).status_code == 200, host
            for host in ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil", ""]:
                for path in ["/healthz", "/", "/v1/keyframes", "/static/app.js"]:
                    r = c.get(path, headers={"host": host})
                    assert r.status_code == 400, (host, path, r.status_code)
                    assert "is not served here" in r.json()["detail"]
            r = c.post("/v1/ask", json={"question": "q"}, headers={"host": "rebound.example"})
            assert r.status_code == 400

    seen = served_app(monkeypatch, check)
    serve(warm_runtime(), bind, 8000, None)
    assert seen["host"] == bind


# --- the token -------------------------------------------------------------------------------------


def test_the_token_is_compared_with_compare_digest_on_every_guarded_route(
    runtime: EdgeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A comparison that says yes to everything lets a wrong token in on every route, so the
    answer comes from hmac.compare_digest (constant time), not from ``==``."""
    calls: list[tuple[bytes, bytes]] = []

    def says_yes(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return True

    with TestClient(create_app(runtime, token=TOKEN)) as c:
        monkeypatch.setattr(hmac, "compare_digest", says_yes)
        for method, path, body in GUARDED:
            calls.clear()
            r = c.request(method, path, json=body, headers={"Authorization": "Bearer not-the-token"})
            assert r.status_code not in (401, 403), (path, r.status_code)
            assert calls == [(b"not-the-token", TOKEN.encode())], path
        monkeypatch.undo()
        for method, path, body in GUARDED:
            wrong = c.request(method, path, json=body, headers={"Authorization": "Bearer not-the-token"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer", path
            assert c.request(method, path, json=body).status_code == 401, path
            assert c.request(method, path, json=body, headers={"Authorization": TOKEN}).status_code == 401
        assert c.get("/healthz").status_code == 200  # liveness probes need no token


def test_a_blank_token_is_refused() -> None:
    rt: Any = StartRecorder()
    for blank in ("", "  "):
        with pytest.raises(ValueError, match="bearer token is blank"):
            create_app(rt, token=blank)


# --- CORS ------------------------------------------------------------------------------------------


def test_other_origins_get_no_cors_headers(runtime: EdgeRuntime) -> None:
    origin = {"Origin": "https://evil.example"}
    with TestClient(create_app(runtime)) as c:
        responses = [
            c.get("/healthz", headers=origin),
            c.get("/", headers=origin),
            c.get("/v1/keyframes", headers=origin),
            c.post("/v1/ask", json={"question": "q"}, headers=origin),
            c.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}]}, headers=origin
            ),
        ]
        for r in responses:
            assert r.status_code == 200, r.request.url
            assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers
        for path in ["/v1/ask", "/v1/chat/completions", "/v1/keyframes", "/healthz"]:
            preflight = c.options(
                path,
                headers={
                    **origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization",
                },
            )
            assert preflight.status_code == 405, (path, preflight.status_code)
            assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]


# --- files -----------------------------------------------------------------------------------------

OUTSIDE = [
    "/static/../server.py",
    "/static/%2e%2e/server.py",
    "/static/..%2fserver.py",
    "/static/%2e%2e%2fserver.py",
    "/static/..%2f..%2fpyproject.toml",
    "/static/..\\server.py",
    "/static/..%5cserver.py",
    "/static/....//server.py",
    "/static/../../../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/" + str(Path(__file__).resolve()),
    "/../edge/server.py",
    "/%2e%2e/edge/server.py",
    "/static/.%2e/server.py",
    "/static/%252e%252e/server.py",  # double-encoded
    "/static/app.js/../../server.py",
    "/static/app.js%00.py",
    "/v1/keyframes/..%2f..%2fserver.py",
    "/v1/keyframes/../../server.py",
    "/v1/keyframes/1.jpg/../../../server.py",
    "/v1/keyframes/%2e%2e%2fserver.py.jpg",
]
# Text of files outside the web folder that must never come back.
MARKERS = ["def create_app", "[project]", "root:x:0:0", "OUTSIDE = ["]


@pytest.fixture(scope="module")
def live(runtime: EdgeRuntime) -> Iterator[ServerThread]:
    with ServerThread(create_app(runtime)) as server:
        yield server


def raw_get(server: ServerThread, target: str) -> tuple[int, bytes]:
    """GET with the request target exactly as written (http.client does not normalise it)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("target", OUTSIDE)
def test_no_url_serves_a_file_outside_the_web_folder(live: ServerThread, target: str) -> None:
    status, body = raw_get(live, target)
    assert status in (400, 404, 405, 422), (target, status, body[:200])
    text = body.decode("utf-8", "replace")
    assert not [m for m in MARKERS if m in text], (target, text[:200])


def test_the_web_folder_and_keyframes_are_served(live: ServerThread, runtime: EdgeRuntime) -> None:
    """The guards above refuse for the right reason: the real files and thumbnails do come back."""
    status, body = raw_get(live, "/static/app.js")
    assert status == 200 and body == (WEB_DIR / "app.js").read_bytes()
    status, body = raw_get(live, "/")
    assert status == 200 and body == (WEB_DIR / "index.html").read_bytes()
    kf = runtime.snapshot().keyframes[0]
    status, body = raw_get(live, f"/v1/keyframes/{kf.id}.jpg")
    assert status == 200 and body[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize(
    ("keyframe", "status"),
    [("abc", 422), ("1e3", 422), ("1.5", 422), ("0x10", 422), ("9" * 5000, 422), ("-1", 404), ("999999", 404),
     ("%00", 422), ("", 404)],
)  # fmt: skip
def test_keyframe_ids_are_integers_of_the_buffer(live: ServerThread, keyframe: str, status: int) -> None:
    got, body = raw_get(live, f"/v1/keyframes/{keyframe}.jpg")
    assert got == status, (keyframe, got, body[:200])
    assert not body.startswith(b"\xff\xd8")
