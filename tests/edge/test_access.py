"""Who can reach the runtime, and what it will serve:

* a bind beyond loopback needs a bearer token, checked in ``serve`` (the one place that binds,
  whoever calls it: ``edge run``, the demo, a script) before anything starts, and the start log
  says the token is required; a loopback bind answers only loopback ``Host`` names (DNS
  rebinding: a web page whose domain resolves to 127.0.0.1 cannot talk to the camera);
* the token: every route but ``PUBLIC_PATHS`` needs it (walked over the app's own route table, so
  a new route is covered without anyone listing it), compared with ``hmac.compare_digest``; it
  comes from ``$EGOVLM_TOKEN`` or ``--token-file`` (``--token`` on the command line is refused for
  an exposed bind: ``ps`` shows it), must pass the strength rule, and is never printed; wrong
  tokens from one client are slowed down (429 with ``Retry-After``) with bounded memory;
* every state-changing route refuses cross-site requests (``Origin``, ``Sec-Fetch-Site``), again
  walked over the route table; CORS stays closed: no ``Access-Control-Allow-*`` header for
  another origin, preflights refused;
* no Swagger UI (FastAPI's loads from a CDN) and no external script on the page; ``/healthz``
  names the model but never its path; thumbnail URLs are relative, never the request's ``Host``;
* no URL serves a file outside the runtime's web folder (``..``, encoded ``..``, backslashes,
  absolute paths, over a real socket so nothing normalises the path on the way), and keyframe
  URLs take integer ids only;
* the same against the real ``egovlm edge run`` process with a token.
"""

from __future__ import annotations

import hmac
import http.client
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route
from typer.testing import CliRunner

import egovlm.edge.serving as edge_serving
from egovlm.cli import app as cli_app
from egovlm.edge.http_guards import (
    MIN_TOKEN_BITS,
    MIN_TOKEN_CHARS,
    SAFE_METHODS,
    LoginBackoff,
    WeakTokenError,
    check_token_strength,
)
from egovlm.edge.runtime import EdgeRuntime
from egovlm.edge.security import UnsafeBindError, check_bind
from egovlm.edge.server import PUBLIC_PATHS, PUBLIC_PREFIXES, WEB_DIR, create_app
from egovlm.edge.serving import serve
from tests.edge.edge_fakes import ServerThread, scripted_engine
from tests.live_server import edge_run

pytestmark = pytest.mark.timeout(120)

TOKEN = "Xq7-vR2p_L9mZt4Wc8Nd"  # 20 distinct characters: passes the strength rule
NO_BACKOFF = LoginBackoff(free_failures=10**9)  # for tests that send many wrong tokens on purpose


def warm_runtime() -> EdgeRuntime:
    """The real runtime and engine around the scripted model, three keyframes in (no camera)."""
    rt = EdgeRuntime(scripted_engine(capacity=6), None)
    rt.start()
    return refill(rt)


def refill(rt: EdgeRuntime) -> EdgeRuntime:
    """Three keyframes in, again after a route walk that included ``DELETE /v1/keyframes`` (forget)."""
    rng = np.random.default_rng(1)
    if len(rt.engine.buffer) < 3:
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


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, concrete path) the app serves, from its own route table: path parameters
    filled with 1, the static mount as one of its files. A route added later is in here."""
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if isinstance(route, APIRoute | Route):
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            found += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
        elif isinstance(route, Mount):
            found.append(("GET", f"{route.path}/app.js"))
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}: teach routes() about it")
    return found


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


# --- binding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_binds_need_no_token(host: str) -> None:
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "camera.local", ""])
@pytest.mark.parametrize("token", [None, "", "   "])
def test_other_binds_need_a_token(host: str, token: str | None) -> None:
    with pytest.raises(
        UnsafeBindError, match="exposes the camera and the model to the network: pass a bearer token as"
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
    monkeypatch.setattr(edge_serving, "_server_class", lambda: pytest.fail("must not get as far as binding"))
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

    monkeypatch.setattr(edge_serving, "_server_class", lambda: FakeServer)
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
    assert "bearer token required on every route but /, /static/ and /healthz (bound to 0.0.0.0)" in text
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


def test_what_is_public_without_the_token_is_exactly_the_page_and_the_probe() -> None:
    """Making a path public is a decision this test has to be told about."""
    assert frozenset({"/", "/healthz"}) == PUBLIC_PATHS and PUBLIC_PREFIXES == ("/static/",)


def test_every_route_but_the_public_ones_needs_the_token(runtime: EdgeRuntime) -> None:
    app = create_app(runtime, token=TOKEN, login_backoff=NO_BACKOFF)
    found = routes(app)
    assert {
        ("POST", "/v1/ask"),
        ("POST", "/v1/ask/audio"),
        ("GET", "/openapi.json"),
        ("GET", "/metrics"),
    } <= set(found)
    with TestClient(app) as c:
        for method, path in found:
            r = c.request(method, path)
            if is_public(path):
                assert r.status_code != 401, (method, path)
            else:
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path)
        for path in ["/no/such/route", "/docs", "/redoc"]:  # unknown paths give nothing away either
            assert c.get(path).status_code == 401, path


def test_the_token_is_compared_with_compare_digest_on_every_guarded_route(
    runtime: EdgeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A comparison that says yes to everything lets a wrong token in on every route, so the
    answer comes from hmac.compare_digest (constant time), not from ``==``."""
    calls: list[tuple[bytes, bytes]] = []

    def says_yes(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return True

    app = create_app(runtime, token=TOKEN, login_backoff=NO_BACKOFF)
    guarded = [(m, p) for m, p in routes(app) if not is_public(p)]
    wrong = {"Authorization": "Bearer not-the-token"}
    with TestClient(app) as c:
        monkeypatch.setattr(hmac, "compare_digest", says_yes)
        for method, path in guarded:
            calls.clear()
            r = c.request(method, path, headers=wrong)
            assert r.status_code not in (401, 403), (path, r.status_code)
            assert calls == [(b"not-the-token", TOKEN.encode())], path
        monkeypatch.undo()
        for method, path in guarded:
            denied = c.request(method, path, headers=wrong)
            assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer", path
            assert c.request(method, path, headers={"Authorization": TOKEN}).status_code == 401
        refill(runtime)
        ok = c.post("/v1/ask", json={"question": "q"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200, ok.text
        assert c.get("/healthz").status_code == 200  # liveness probes need no token


def test_a_blank_token_is_refused() -> None:
    rt: Any = StartRecorder()
    for blank in ("", "  "):
        with pytest.raises(ValueError, match="bearer token is blank"):
            create_app(rt, token=blank)


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("Z9", "is 2 characters"),
        ("s3cret-token", "is 12 characters"),
        ("a" * 64, "from only 1 distinct ones"),
        ("1234123412341234", "from only 4 distinct ones"),
        ("passwordpassword", "from only 7 distinct ones"),
        ("correct horse battery", "outside printable ASCII, or spaces"),
        ("tökentökentökentöken", "outside printable ASCII, or spaces"),
    ],
)
def test_weak_tokens_are_refused_with_the_rule(token: str, why: str) -> None:
    with pytest.raises(WeakTokenError) as e:
        check_token_strength(token)
    message = str(e.value)
    assert why in message and f"at least {MIN_TOKEN_CHARS} printable ASCII" in message
    assert f">= {MIN_TOKEN_BITS:g}" in message and "secrets.token_urlsafe" in message
    assert token not in message  # the secret is never repeated back
    with pytest.raises(WeakTokenError):
        check_bind("127.0.0.1", token)  # whatever the bind


@pytest.mark.parametrize(
    "token", [TOKEN, "abcdefghijklmnop", "0123456789abcdef0123456789abcdef", "Zm9vYmFyYmF6cXV4LTEyMw"]
)
def test_generated_looking_tokens_are_accepted(token: str) -> None:
    check_token_strength(token)
    check_bind("0.0.0.0", token)


# --- wrong tokens are slowed down ------------------------------------------------------------------


def test_login_backoff_grows_per_client_and_forgets() -> None:
    b = LoginBackoff(free_failures=3, base_s=1.0, max_s=8.0, forget_s=100.0)
    for _ in range(3):
        assert b.wait_s("10.0.0.1", now=0.0) == (_, 0.0)  # a few typos cost nothing
        b.failed("10.0.0.1", now=0.0)
    assert b.wait_s("10.0.0.1", now=0.0) == (3, 1.0)  # then each attempt waits, doubling
    assert b.wait_s("10.0.0.1", now=1.0) == (3, 0.0)
    t = 1.0
    for failures, penalty in [(4, 2.0), (5, 4.0), (6, 8.0), (7, 8.0)]:  # capped at max_s
        b.failed("10.0.0.1", now=t)
        assert b.wait_s("10.0.0.1", now=t) == (failures, penalty)
        t += penalty
    assert b.wait_s("10.0.0.1", now=t - 8.0 + 3.0) == (7, 5.0)  # counts down
    assert b.wait_s("10.0.0.2", now=t) == (0, 0.0)  # another client is not affected
    assert b.wait_s("10.0.0.1", now=t + 101.0) == (0, 0.0)  # forgotten after forget_s
    b.failed("10.0.0.1", now=t)
    b.succeeded("10.0.0.1")
    assert b.wait_s("10.0.0.1", now=t) == (0, 0.0)  # the right token clears it


def test_login_backoff_memory_is_bounded_and_ipv6_counts_per_64() -> None:
    b = LoginBackoff(free_failures=0, max_clients=100)
    for i in range(10_000):  # an attacker with many addresses
        b.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", now=1.0)
    assert len(b) == 100
    v6 = LoginBackoff(free_failures=1)
    v6.failed("2001:db8::1", now=0.0)
    v6.failed("2001:db8::ffff:2", now=0.0)  # same /64: one host rotating its addresses
    assert v6.wait_s("2001:db8::3", now=0.0) == (2, 2.0)
    assert v6.wait_s("2001:db8:0:1::1", now=0.0) == (0, 0.0)  # another /64


def test_wrong_tokens_get_429_with_retry_after_then_the_right_one_works(runtime: EdgeRuntime) -> None:
    backoff = LoginBackoff(free_failures=2, base_s=30.0)
    with TestClient(create_app(runtime, token=TOKEN, login_backoff=backoff)) as c:
        wrong = {"Authorization": "Bearer guess"}
        assert [c.get("/v1/keyframes", headers=wrong).status_code for _ in range(2)] == [401, 401]
        slowed = c.get("/v1/keyframes", headers=wrong)
        assert slowed.status_code == 429 and slowed.headers["retry-after"] == "30"
        assert slowed.json()["detail"] == "2 wrong bearer tokens from this client: retry in 30 s"
        # while it lasts even the right token waits: the attempt is not evaluated at all
        right = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/v1/keyframes", headers=right).status_code == 429
        assert c.get("/v1/keyframes").status_code == 401  # no token at all is no guess: not slowed
        backoff.succeeded("testclient")  # as if the penalty had passed and the right token came
        assert c.get("/v1/keyframes", headers=right).status_code == 200


# --- cross-site requests -----------------------------------------------------------------------------

CROSS_SITE = [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://testserver:8001"},  # same host, another port: another origin
    {"Origin": "https://testserver"},  # another scheme
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
]
SAME_ORIGIN = [
    {},  # curl, the CLI, SDKs
    {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
    {"Origin": "http://TESTSERVER:80"},
    {"Sec-Fetch-Site": "none"},  # typed into the address bar
]


@pytest.mark.parametrize("token", [None, TOKEN])
def test_every_state_changing_route_refuses_cross_site_requests(
    runtime: EdgeRuntime, token: str | None
) -> None:
    app = create_app(runtime, token=token, login_backoff=NO_BACKOFF)
    changing = [(m, p) for m, p in routes(app) if m not in SAFE_METHODS]
    assert {("POST", "/v1/ask"), ("POST", "/v1/ask/audio"), ("POST", "/v1/voice/ptt")} <= set(changing)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    with TestClient(app) as c:
        for method, path in changing:
            for headers in CROSS_SITE:
                r = c.request(method, path, headers={**auth, **headers})
                assert r.status_code == 403, (method, path, headers, r.status_code)
                assert r.json()["detail"].startswith(f"cross-site {method} refused: "), r.text
            for headers in SAME_ORIGIN:
                r = c.request(method, path, headers={**auth, **headers})
                assert r.status_code not in (401, 403), (method, path, headers, r.status_code, r.text[:200])
        page = c.get("/", headers={"Sec-Fetch-Site": "cross-site"})  # reading is not changing
        assert page.status_code == 200
    assert {("POST", "/v1/capture/pause"), ("DELETE", "/v1/keyframes")} <= set(changing)
    runtime.resume()
    refill(runtime)


def test_a_same_origin_page_can_ask(runtime: EdgeRuntime) -> None:
    with TestClient(create_app(runtime)) as c:
        r = c.post(
            "/v1/ask",
            json={"question": "q"},
            headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
        )
        assert r.status_code == 200, r.text


# --- what responses reveal --------------------------------------------------------------------------


def test_healthz_names_the_model_but_not_its_path(
    runtime: EdgeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    described = {
        "backend": "onnx",
        "model": "/srv/models/egovlm-3b",
        "engine_dir": "/srv/models/egovlm-3b/engines",
        "cache": "~/.cache/x",
        "device": "cuda:0",
        "keyframe_size": [448, 336],
    }
    monkeypatch.setattr(runtime.engine.backend, "describe", lambda: described, raising=False)
    with TestClient(create_app(runtime)) as c:
        body = c.get("/healthz").json()
    assert body["model"] == {
        "name": runtime.model_name,
        "backend": "onnx",
        "device": "cuda:0",
        "keyframe_size": [448, 336],
    }
    assert "/srv" not in str(body) and "~/" not in str(body)


def test_urls_in_responses_are_relative_whatever_the_host(runtime: EdgeRuntime) -> None:
    with TestClient(create_app(runtime), base_url="http://attacker.example:666") as c:
        kfs = c.get("/v1/keyframes").json()["keyframes"]
        answer = c.post("/v1/ask", json={"question": "q", "options": {"A": "a", "B": "b"}}).json()
    urls = [k["thumbnail_url"] for k in kfs] + [f["thumbnail_url"] for f in answer["frames"]]
    urls += [x["thumbnail_url"] for x in answer["cited"]]
    assert urls and all(re.fullmatch(r"/v1/keyframes/\d+\.jpg", u) for u in urls), urls


def test_no_swagger_ui_and_nothing_loaded_from_another_host(runtime: EdgeRuntime) -> None:
    """FastAPI's /docs loads Swagger UI from a CDN: an offline device cannot, so there is none;
    the schema stays at /openapi.json (behind the token when there is one)."""
    with TestClient(create_app(runtime)) as c:
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/openapi.json").json()["info"]["title"] == "egovlm edge"
        page = c.get("/").text
    for text in [page, *(p.read_text() for p in WEB_DIR.iterdir() if p.suffix in (".js", ".html", ".css"))]:
        refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", text) + re.findall(
            r"""import\s*\(?["']([^"']+)""", text
        )
        assert not [r for r in refs if re.match(r"(?:[a-z]+:)?//", r)], refs


# --- the token on the command line -------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(cli_app, ["edge", "run", "--source", "test://", *args], env=env)
    return r.exit_code, r.output


def test_a_token_on_the_command_line_is_refused_for_an_exposed_bind() -> None:
    code, out = run_cli("--host", "0.0.0.0", "--token", TOKEN, "--model", "x")
    assert code == 2 and "--token on the command line is readable by every user of this machine" in out
    assert "pass it as $EGOVLM_TOKEN or --token-file FILE" in out and TOKEN not in out


def test_a_token_on_the_command_line_of_a_loopback_bind_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="egovlm.edge"):
        code, out = run_cli("--token", TOKEN)
    assert code == 2 and "--model is required" in out, out  # went on past the token checks
    assert "--token on the command line is readable by every user of this machine (ps)" in caplog.text
    assert TOKEN not in out + caplog.text


def test_the_token_from_the_environment_or_a_file_passes_the_bind_check(tmp_path: Path) -> None:
    """Both get past the token checks to the next refusal (no --model)."""
    code, out = run_cli("--host", "0.0.0.0", env={"EGOVLM_TOKEN": TOKEN})
    assert code == 2 and "--model is required" in out, out
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    code, out = run_cli("--host", "0.0.0.0", "--token-file", str(token_file))
    assert code == 2 and "--model is required" in out, out
    code, out = run_cli("--token-file", str(token_file), "--model", "x", env={"EGOVLM_TOKEN": TOKEN})
    assert code == 2 and "both --token-file and --token (or $EGOVLM_TOKEN): pass one" in out
    empty = tmp_path / "empty"
    empty.write_text("\n")
    code, out = run_cli("--token-file", str(empty), "--model", "x")
    assert code == 2 and "the first line is empty" in out
    code, out = run_cli("--token-file", str(tmp_path / "missing"), "--model", "x")
    assert code == 2 and "cannot read it" in out
    assert TOKEN not in out


@pytest.mark.parametrize("source", ["env", "file"])
def test_a_weak_token_is_refused_before_the_model_loads(source: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("hunter2\n")
    args, env = (
        (["--token-file", str(token_file)], None) if source == "file" else ([], {"EGOVLM_TOKEN": "hunter2"})
    )
    code, out = run_cli(*args, env=env)
    assert code == 2 and "the bearer token is 7 characters" in out and "hunter2" not in out, out


# --- the real process ------------------------------------------------------------------------------


def test_the_real_server_guards_its_routes_and_reveals_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``egovlm edge run`` with the token in $EGOVLM_TOKEN: the schema and every data route need
    it, /docs does not exist, cross-site POSTs (the audio upload with ``speak=true`` included)
    are refused, /healthz names the model without its path, URLs are relative whatever the Host,
    wrong tokens are slowed, and the token never reaches the log."""
    args = ["--source", "synth://", "--model", str(tiny_model_dir), "--capacity", "3"]
    args += ["--max-new-tokens", "2", "--status-every", "0"]
    with edge_run(args, tmp_path / "edge-run.log", env={"EGOVLM_TOKEN": TOKEN}) as server:
        server.wait_ready(keyframes=2)
        url, auth = server.url, {"Authorization": f"Bearer {TOKEN}"}
        health = httpx.get(f"{url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["model"]["name"] == tiny_model_dir.name
        assert str(tiny_model_dir.parent) not in health.text, health.text
        assert httpx.get(f"{url}/openapi.json", timeout=10).status_code == 401
        assert httpx.get(f"{url}/openapi.json", headers=auth, timeout=10).status_code == 200
        assert httpx.get(f"{url}/docs", headers=auth, timeout=10).status_code == 404
        evil = {**auth, "Origin": "https://evil.example", "Content-Type": "audio/wav"}
        r = httpx.post(f"{url}/v1/ask/audio?speak=true", content=b"RIFF", headers=evil, timeout=10)
        assert r.status_code == 403 and "Origin 'https://evil.example' is not this server" in r.text
        r = httpx.post(
            f"{url}/v1/ask", json={"question": "q"}, headers={**auth, "Sec-Fetch-Site": "cross-site"}
        )
        assert r.status_code == 403 and "Sec-Fetch-Site is 'cross-site'" in r.text
        page = {**auth, "Origin": url, "Sec-Fetch-Site": "same-origin"}
        r = httpx.post(f"{url}/v1/ask", json={"question": "what now?"}, headers=page, timeout=120)
        assert r.status_code == 200, r.text
        assert all(f["thumbnail_url"].startswith("/v1/keyframes/") for f in r.json()["frames"]), r.text
        port = url.rsplit(":", 1)[1]
        r = httpx.get(f"{url}/v1/keyframes", headers={**auth, "Host": f"localhost:{port}"}, timeout=10)
        assert r.status_code == 200 and "localhost" not in r.text and "127.0.0.1" not in r.text
        wrong = {"Authorization": "Bearer guess-guess-guess"}
        codes = [httpx.get(f"{url}/v1/keyframes", headers=wrong, timeout=10).status_code for _ in range(6)]
        assert codes == [401] * 5 + [429], codes
        assert server.alive() and server.stop() == 0, server.tail()
    assert TOKEN not in server.tail(1_000_000)


# --- CORS ------------------------------------------------------------------------------------------


def test_other_origins_get_no_cors_headers(runtime: EdgeRuntime) -> None:
    origin = {"Origin": "https://evil.example"}
    with TestClient(create_app(runtime)) as c:
        reads = [
            c.get("/healthz", headers=origin),
            c.get("/", headers=origin),
            c.get("/v1/keyframes", headers=origin),
        ]
        writes = [
            c.post("/v1/ask", json={"question": "q"}, headers=origin),
            c.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}]}, headers=origin
            ),
        ]
        for r in reads + writes:
            assert r.status_code == (200 if r in reads else 403), r.request.url
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
