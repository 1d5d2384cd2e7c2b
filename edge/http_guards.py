"""Request guards for the edge server, as plain ASGI middleware and handlers: they answer before
FastAPI reads or parses anything, so bad input is refused early and by name.

* :class:`BodyLimit`: a request body over the limit gets 413 (by ``Content-Length`` before any
  byte is read, or while a chunked body arrives); a body that stalls gets 408.
* :class:`HostCheck`: a loopback-bound server answers only loopback ``Host`` names (DNS rebinding).
* :func:`invalid_request`: FastAPI's 422 body, but always strict JSON and with the echoed input
  cut short (the default handler fails with 500 on NaN or unpaired surrogates).

Hand-written because FastAPI's own ``max_body_size`` (0.165+) gives no limit or route in its 413
and the version range in pyproject allows older FastAPI; Starlette's TrustedHostMiddleware answers
with a bare text body and no hint of the names that are served.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def _refuse(send: Send, status: int, detail: str, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the unread body must not be taken for the next request on this connection
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413 naming the limit: by ``Content-Length``
    before reading a byte, else while a chunked body arrives (reading stops at the limit); a body
    that stalls for ``timeout_s`` between chunks gets 408 (a slow client must not hold a
    connection open forever). The body is then handed to the app as read. Paths in ``exempt``
    enforce their own limits."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, exempt: frozenset[str] = frozenset(), timeout_s: float = 30.0
    ) -> None:
        self.app, self.max_bytes, self.exempt, self.timeout_s = app, max_bytes, exempt, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        where = f"{scope['method']} {scope['path'][:200]}"
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _refuse(send, 400, f"Content-Length {length[:40]!r} is not a byte count", close=True)
                return
            if int(length) > self.max_bytes:
                await _refuse(
                    send,
                    413,
                    f"request body of {int(length)} bytes is over the {self.max_bytes}-byte limit of {where}",
                    close=True,
                )
                return
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                await _refuse(
                    send, 408, f"request body stalled for {self.timeout_s:g} s after {size} bytes", close=True
                )
                return
            if message["type"] != "http.request":  # the client went away mid-body
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(
                    send, 413, f"request body over the {self.max_bytes}-byte limit of {where}", close=True
                )
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later: http.disconnect, which streaming responses wait for

        await self.app(scope, replay, send)


def host_name(header: str) -> str:
    """The host of a ``Host`` header, without port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """Answer only requests whose ``Host`` names this server (400 otherwise). For a loopback
    bind this stops DNS rebinding: a web page whose domain is re-pointed at 127.0.0.1 sends its
    own domain as the Host, so it cannot reach the camera, the model or the web page."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, frozenset(h.lower() for h in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = Headers(scope=scope).get("host", "")
            if host_name(given) not in self.allowed:
                await _refuse(
                    send,
                    400,
                    f"Host {given[:100]!r} is not served here: use one of {', '.join(sorted(self.allowed))}",
                )
                return
        await self.app(scope, receive, send)


def json_safe(
    value: Any, depth: int = 0, max_depth: int = 8, max_items: int = 50, max_chars: int = 200
) -> Any:
    """``value`` (what a request sent) as strict JSON: NaN/Infinity as text, unpaired surrogates
    escaped, long strings and deep or wide structures cut short. For echoing bad input in 422
    bodies: the default handler fails on those (500) and would echo a 1 MB body back whole."""
    if depth >= max_depth:
        return "…"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        text = value if len(value) <= max_chars else value[:max_chars] + "…"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")

    def inner(v: Any) -> Any:
        return json_safe(v, depth + 1, max_depth, max_items, max_chars)

    if isinstance(value, Mapping):
        items = list(value.items())
        out = {str(inner(k)): inner(v) for k, v in items[:max_items]}
        if len(items) > max_items:
            out["…"] = f"{len(items) - max_items} more"
        return out
    if isinstance(value, list | tuple):
        more = [f"… {len(value) - max_items} more"] if len(value) > max_items else []
        return [inner(v) for v in value[:max_items]] + more
    return json_safe(str(value), depth, max_depth, max_items, max_chars)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 for a body or parameter that fails validation: FastAPI's ``detail`` list (type, loc,
    msg, input, ctx) as strict JSON, the echoed ``input`` cut short (:func:`json_safe`)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {key: json_safe(v, max_chars=200 if key == "input" else 4000) for key, v in error.items()}
        for error in errors[:100]
    ]
    return JSONResponse({"detail": detail}, status_code=422)
