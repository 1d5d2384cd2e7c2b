"""An HTTP client for a running edge server (``egovlm edge run``), usable without the CLI.

Each call takes the server's ``url`` and bearer ``token``, returns the server's JSON answer (the
shapes of :mod:`egovlm.edge.api_models`) and raises :class:`ClientError` with a message fit for a
user: :class:`ServerUnreachableError` when nothing listens at ``url``, :class:`ServerError` when
the server refused or failed the request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from egovlm.edge.security import DEFAULT_URL

JSON = dict[str, Any]
TokenPrinter = Callable[[str], None]


class ClientError(RuntimeError):
    """A request to the edge server that did not produce an answer; the message says why."""


class ServerUnreachableError(ClientError):
    """No server listens at the URL."""


class ServerError(ClientError):
    """The server answered with an error (``status`` 0: an error event in a streamed answer)."""

    def __init__(self, message: str, status: int = 0, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _endpoint(url: str, path: str) -> str:
    return url.rstrip("/") + path


@contextmanager
def _transport_errors(url: str, endpoint: str, run: str = "egovlm edge run --model DIR") -> Iterator[None]:
    """httpx's transport errors as :class:`ClientError`: nothing listening at ``url`` becomes
    :class:`ServerUnreachableError` saying how to start a server (``run``)."""
    try:
        yield
    except httpx.ConnectError:
        raise ServerUnreachableError(f"no server at {url}: start one with `{run}`") from None
    except httpx.HTTPError as e:
        raise ClientError(f"{endpoint}: {e}") from e


def _json_object(text: str) -> JSON | None:
    """``text`` parsed as a JSON object, or None when it is not one (a proxy's HTML page, a list)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def raise_for(r: httpx.Response) -> None:
    """:class:`ServerError` for a 4xx/5xx response, with the server's ``detail``."""
    if r.status_code >= 400:
        body = _json_object(r.text)
        detail = body.get("detail", r.text) if body is not None else r.text
        raise ServerError(f"server answered {r.status_code}: {detail}", r.status_code, detail)


def _reply(r: httpx.Response) -> JSON:
    """A successful response's JSON object; :class:`ClientError` naming the URL when the body is
    something else (whatever answered is not an egovlm server, or a proxy rewrote the reply)."""
    raise_for(r)
    body = _json_object(r.text)
    if body is None:
        raise ClientError(
            f"{r.request.url}: the reply (HTTP {r.status_code}) is not a JSON object: {r.text[:200]!r}"
        )
    return body


def ask(
    question: str,
    url: str = DEFAULT_URL,
    token: str | None = None,
    *,
    options: dict[str, str] | None = None,
    max_new_tokens: int | None = None,
    use_cache: bool = True,
    timeout: float = 300.0,
    on_token: TokenPrinter | None = None,
) -> JSON:
    """``POST /v1/ask``: the answer (``AskResponse`` as JSON). With ``on_token`` the answer is
    streamed and each generated piece of text is handed to it as it arrives."""
    body: JSON = {"question": question, "options": options, "use_cache": use_cache}
    if max_new_tokens:
        body["max_new_tokens"] = max_new_tokens
    endpoint = _endpoint(url, "/v1/ask")
    with _transport_errors(url, endpoint):
        if on_token is not None:
            return _ask_streaming(endpoint, body, _headers(token), timeout, on_token)
        r = httpx.post(endpoint, json=body, headers=_headers(token), timeout=timeout)
        return _reply(r)


def ask_audio(
    audio: Path,
    url: str = DEFAULT_URL,
    token: str | None = None,
    *,
    options: dict[str, str] | None = None,
    speak: bool = False,
    timeout: float = 300.0,
) -> JSON:
    """``POST /v1/ask/audio`` with a recording: the transcript, the answer and the voice latency."""
    params: JSON = {"speak": speak}
    if options:
        params["options"] = json.dumps(options)
    endpoint = _endpoint(url, "/v1/ask/audio")
    with _transport_errors(url, endpoint, run="egovlm edge run --model DIR --voice"), audio.open("rb") as f:
        r = httpx.post(
            endpoint,
            files={"audio": (audio.name, f)},
            params=params,
            headers=_headers(token),
            timeout=timeout,
        )
    return _reply(r)


def _privacy_call(method: str, path: str, url: str, token: str | None) -> JSON:
    endpoint = _endpoint(url, path)
    with _transport_errors(url, endpoint):
        r = httpx.request(method, endpoint, headers=_headers(token), timeout=30)
    return _reply(r)


def pause(url: str = DEFAULT_URL, token: str | None = None) -> str:
    """Pause capture; the capture state after it (``paused``)."""
    return str(_privacy_call("POST", "/v1/capture/pause", url, token)["capture"])


def resume(url: str = DEFAULT_URL, token: str | None = None) -> str:
    """Resume capture; the capture state after it (``on``)."""
    return str(_privacy_call("POST", "/v1/capture/resume", url, token)["capture"])


def forget(url: str = DEFAULT_URL, token: str | None = None) -> str:
    """Forget keyframes, thumbnails, model state and transcripts; the capture state after it."""
    return str(_privacy_call("DELETE", "/v1/keyframes", url, token)["capture"])


def _ask_streaming(
    endpoint: str, body: JSON, headers: dict[str, str], timeout: float, on_token: TokenPrinter
) -> JSON:
    """Read the server-sent events of a streamed answer: ``token`` pieces go to ``on_token``,
    ``answer`` is the result, ``error`` raises :class:`ServerError`."""
    answer: JSON | None = None
    with httpx.stream("POST", endpoint, json={**body, "stream": True}, headers=headers, timeout=timeout) as r:
        if r.status_code >= 400:
            r.read()
            raise_for(r)
        event = "message"
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = _json_object(line[5:].strip())
                if data is None:
                    raise ClientError(
                        f"{endpoint}: a streamed {event!r} event is not a JSON object: {line[:200]!r}"
                    )
                if event == "token":
                    on_token(str(data.get("text", "")))
                elif event == "answer":
                    answer = data
                elif event == "error":
                    raise ServerError(f"server error: {data.get('detail')}", detail=data.get("detail"))
    if answer is None:
        raise ClientError("the stream ended without an answer")
    return answer


def format_answer_report(a: JSON, printed_text: bool = False) -> str:
    """A readable summary of an /v1/ask response (shared by ``edge ask`` and the demo)."""
    lines = [] if printed_text else [a["text"].strip() or "(empty completion)"]
    letter = a.get("answer")
    if letter and a.get("options") and letter in a["options"]:
        letter = f"{letter}. {a['options'][letter]}"
    status = "format ok" if a["format_ok"] else "format not followed: " + "; ".join(a["problems"])
    lines.append(f"answer:  {letter or '-'}  ({status})")
    if a.get("think"):
        lines.append(f"think:   {a['think']}")
    if a["cited"]:
        for c in a["cited"]:
            lines.append(
                f"cited:   frame {c['index']} at t={c['t']:.1f} s (keyframe {c['id']})  {c['thumbnail_url']}"
            )
    else:
        lines.append(f"cited:   none (prompt had {len(a['frames'])} keyframes)")
    if a.get("invalid_citations"):
        lines.append(f"         cited frame numbers outside 1..{len(a['frames'])}: {a['invalid_citations']}")
    lat = a["latency"]
    where = "cached frames" if a["cached"] else "from scratch"
    lines.append(
        f"latency: TTFT {lat['ttft_ms']:.0f} ms, total {lat['total_ms']:.0f} ms, "
        f"{lat['n_new_tokens']} tokens at {lat['decode_tok_s']:.1f} tok/s "
        f"(queue {lat['queue_ms']:.0f} ms, prefill {lat['prefill_ms']:.0f} ms "
        f"for {lat['n_prefill_tokens']} of {lat['n_prompt_tokens']} prompt tokens, {where})"
    )
    return "\n".join(lines)
