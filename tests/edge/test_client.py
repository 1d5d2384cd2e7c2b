"""The HTTP client against whatever answers at the URL: a reply that is not the server's JSON (a
proxy's HTML page, a JSON list, a broken stream) is a :class:`ClientError` naming the URL and what
came back, never a traceback from deep inside the client."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from egovlm.edge import client

# path -> (status, content type, body) the stand-in server answers with
REPLIES: dict[str, tuple[int, str, bytes]] = {
    "html": (200, "text/html", b"<html><body>Captive portal: log in</body></html>"),
    "list": (200, "application/json", b'["not", "an", "object"]'),
    "bad-gateway": (502, "text/html", b"<html>502 Bad Gateway</html>"),
    "error-list": (400, "application/json", b"[1, 2]"),
    "stream": (
        200,
        "text/event-stream",
        b'event: token\ndata: {"text": "Th"}\n\nevent: answer\ndata: oops\n\n',
    ),
}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        status, ctype, body = REPLIES[self.server.mode]  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: ThreadingHTTPServer, mode: str) -> str:
    srv.mode = mode  # type: ignore[attr-defined]
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_a_reply_that_is_not_json_names_the_url_and_shows_it(server: ThreadingHTTPServer) -> None:
    url = _url(server, "html")
    with pytest.raises(
        client.ClientError, match=r"/v1/ask: the reply \(HTTP 200\) is not a JSON object.*Captive"
    ):
        client.ask("what did I pick up?", url, timeout=5)
    with pytest.raises(client.ClientError, match=r"/v1/capture/pause: .*not a JSON object"):
        client.pause(url)


def test_a_json_list_is_not_an_answer(server: ThreadingHTTPServer) -> None:
    with pytest.raises(client.ClientError, match="not a JSON object"):
        client.ask("what?", _url(server, "list"), timeout=5)


def test_an_error_page_keeps_its_status_and_text(server: ThreadingHTTPServer) -> None:
    with pytest.raises(client.ServerError, match="server answered 502: <html>502 Bad Gateway") as e:
        client.ask("what?", _url(server, "bad-gateway"), timeout=5)
    assert e.value.status == 502
    with pytest.raises(client.ServerError, match=r"server answered 400: \[1, 2\]"):
        client.ask("what?", _url(server, "error-list"), timeout=5)


def test_a_broken_stream_event_is_a_client_error(server: ThreadingHTTPServer) -> None:
    pieces: list[str] = []
    with pytest.raises(client.ClientError, match="streamed 'answer' event is not a JSON object"):
        client.ask("what?", _url(server, "stream"), timeout=5, on_token=pieces.append)
    assert pieces == ["Th"]  # what arrived before the broken event was still shown


def test_edge_ask_prints_the_error_not_a_traceback(server: ThreadingHTTPServer) -> None:
    """What the user runs: ``egovlm edge ask`` against a URL where something else answers."""
    url = _url(server, "html")
    cmd = [sys.executable, "-m", "egovlm.cli", "edge", "ask", "what?", "--url", url, "--no-stream"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "not a JSON object" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
