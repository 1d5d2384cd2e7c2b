"""Request guards for the edge server: plain ASGI middleware (they answer before FastAPI reads or
parses anything, so bad input is refused early and by name) and uvicorn's HTTP protocol with a
deadline on the request head.

Deadlines at every stage of a request (:class:`Deadlines`):

* the request head (request line + headers): :class:`HeadDeadlineH11Protocol`. uvicorn has no
  such setting (``timeout_keep_alive`` runs only between requests and is reset by every byte
  received, so a client that sends half its headers holds the connection forever; the feature is
  uvicorn issue #157, open since 2018), so this is the one deadline added at the protocol level;
* the body: :class:`BodyLimit`, a stall deadline between chunks and an overall deadline for the
  whole body (a slow drip of one byte a second cannot outlast it), for every route, the audio
  upload included;
* header size: uvicorn's ``h11_max_incomplete_event_size`` (a head over it gets 400); the number of
  connections and tasks: uvicorn's ``limit_concurrency`` (503 beyond it); set in
  :func:`egovlm.edge.serving.serve`.

Who may ask:

* :class:`HostCheck`: a loopback-bound server answers only loopback ``Host`` names (DNS rebinding);
* :class:`CrossSiteCheck`: a state-changing request (any method but GET/HEAD/OPTIONS) sent by a
  web page of another origin is refused (403), by ``Sec-Fetch-Site`` and ``Origin``;
* :class:`TokenCheck`: with a bearer token, every path but :data:`PUBLIC_PATHS` needs it (so a new
  route cannot forget it), compared in constant time; wrong tokens from one client are slowed
  down (:class:`LoginBackoff`); :func:`check_token_strength` refuses guessable tokens.

And :func:`invalid_request`: FastAPI's 422 body, but always strict JSON and with the echoed input
cut short (the default handler fails with 500 on NaN or unpaired surrogates).

Hand-written because FastAPI's own ``max_body_size`` (0.165+) gives no limit or route in its 413
and the version range in pyproject allows older FastAPI; Starlette's TrustedHostMiddleware answers
with a bare text body and no hint of the names that are served; Starlette has no cross-site or
bearer-token middleware.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import string
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("egovlm.edge")


@dataclass(frozen=True)
class Deadlines:
    """How long each stage of a request may take, in seconds. ``head_s``: from the connection
    opening (or the previous response ending) to the end of the request head; ``body_stall_s``:
    the longest pause between chunks of a body; ``body_total_s``: the whole body (1 MiB of JSON or
    a 10 MiB audio upload at a few hundred kB/s is well within the default)."""

    head_s: float = 10.0
    body_stall_s: float = 30.0
    body_total_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("head_s", "body_stall_s", "body_total_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"Deadlines.{name}: expected a positive number of seconds, got {value!r}")


async def _refuse(
    send: Send, status: int, detail: str, close: bool = False, headers: Mapping[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if close:  # the unread body must not be taken for the next request on this connection
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# --- the request head --------------------------------------------------------------------------


class HeadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline on the request head: a connection that has not
    sent a complete request line and headers within :attr:`head_timeout_s` of opening (or of the
    previous response ending) is closed, after a 408 if it had sent part of a head. uvicorn has
    no setting for this (see the module docstring); make a configured subclass with
    :func:`head_deadline_protocol` and pass it as ``uvicorn.Config(http=...)``. Subclassing
    h11's protocol rather than "auto" also pins the parser that ``h11_max_incomplete_event_size``
    configures (httptools ignores it)."""

    head_timeout_s: float = Deadlines.head_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_cycle: Any = None  # the request cycle current when the deadline was armed
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is not None:
            self._head_bytes += len(data)
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self._head_timer is not None and self.cycle is not self._head_cycle:
            self._cancel_head_deadline()  # a new request's head is complete: its cycle started

    def on_response_complete(self) -> None:
        # Armed first: a pipelined request that super() starts right away disarms it again.
        if not self.transport.is_closing():
            self._arm_head_deadline()
        super().on_response_complete()

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_cycle, self._head_bytes = self.cycle, 0
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_expired)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        running = self.cycle is not None and not self.cycle.response_complete
        if self.transport.is_closing() or self.cycle is not self._head_cycle or running:
            return
        if self._head_bytes and self.conn.their_state is h11.IDLE:  # part of a head arrived
            detail = f"request head not complete within {self.head_timeout_s:g} s"
            body = json.dumps({"detail": detail}).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info(
            "closed the connection of %s: no complete request head within %g s", client, self.head_timeout_s
        )
        self.transport.close()


def head_deadline_protocol(head_timeout_s: float) -> type[HeadDeadlineH11Protocol]:
    """A :class:`HeadDeadlineH11Protocol` with this deadline, for ``uvicorn.Config(http=...)``."""
    return type("HeadDeadlineH11Protocol", (HeadDeadlineH11Protocol,), {"head_timeout_s": head_timeout_s})


# --- the body ----------------------------------------------------------------------------------


class BodyTimeoutError(Exception):
    """A request body stalled, or did not finish within its overall deadline."""


class _BodyClock:
    """The two body deadlines of one request, started when the request head was complete."""

    def __init__(self, stall_s: float, total_s: float) -> None:
        self.stall_s, self.total_s = stall_s, total_s
        self.start, self.size = time.monotonic(), 0

    async def receive(self, receive: Receive) -> Message:
        left = self.total_s - (time.monotonic() - self.start)
        try:
            if left <= 0:
                raise asyncio.TimeoutError
            message = await asyncio.wait_for(receive(), min(self.stall_s, left))
        except asyncio.TimeoutError:
            if left <= self.stall_s:
                raise BodyTimeoutError(
                    f"request body not complete within the {self.total_s:g} s deadline "
                    f"({self.size} bytes received)"
                ) from None
            raise BodyTimeoutError(
                f"request body stalled for {self.stall_s:g} s after {self.size} bytes"
            ) from None
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
        return message


class BodyLimit:
    """Request body limits. Routes that read the body whole (the JSON routes): a body over
    ``max_bytes`` gets 413 naming the limit, by ``Content-Length`` before reading a byte, else
    while a chunked body arrives (reading stops at the limit); the body is then handed to the app
    as read. Every route, those in ``exempt`` too (they stream the body and enforce their own size
    limit: the audio upload): a body that stalls for ``timeout_s`` between chunks, or is not
    complete ``deadline_s`` after the request head, gets 408 and the connection is closed (a slow
    client must not hold a connection, or a worker, for ever)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        exempt: frozenset[str] = frozenset(),
        timeout_s: float = Deadlines.body_stall_s,
        deadline_s: float = Deadlines.body_total_s,
    ) -> None:
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt
        self.timeout_s, self.deadline_s = timeout_s, deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = _BodyClock(self.timeout_s, self.deadline_s)
        if scope["path"] in self.exempt:
            await self.app(scope, _streamed(clock, receive), send)
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
        chunks, more = [], True
        while more:
            try:
                message = await clock.receive(receive)
            except BodyTimeoutError as e:
                await _refuse(send, 408, str(e), close=True)
                return
            if message["type"] != "http.request":  # the client went away mid-body
                return
            if clock.size > self.max_bytes:
                await _refuse(
                    send, 413, f"request body over the {self.max_bytes}-byte limit of {where}", close=True
                )
                return
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later: http.disconnect, which streaming responses wait for

        await self.app(scope, replay, send)


def _streamed(clock: _BodyClock, receive: Receive) -> Receive:
    """``receive`` under the body deadlines, for a route that reads the body as it arrives: a
    timeout is raised as HTTPException 408 from inside the route's read, so FastAPI answers it
    (and the connection closes). Once the body is complete, ``receive`` is passed through
    untimed (a streaming response waits on it for the client's disconnect)."""
    done = False

    async def guarded() -> Message:
        nonlocal done
        if done:
            return await receive()
        try:
            message = await clock.receive(receive)
        except BodyTimeoutError as e:
            raise HTTPException(408, str(e), headers={"Connection": "close"}) from None
        done = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return guarded


# --- who may ask -------------------------------------------------------------------------------

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site_reason(headers: Headers, scheme: str) -> str | None:
    """Why a request comes from a web page of another origin, or None. ``Sec-Fetch-Site`` (sent
    by every current browser) must be ``same-origin`` or ``none`` (typed in, bookmarks); an
    ``Origin`` (older browsers send it on POST) must be this server's own scheme, host and port,
    as named by the ``Host`` header. A request with neither comes from no browser page (curl,
    the CLI, SDKs): allowed."""
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site[:40]!r}"
    origin = headers.get("origin")
    if origin is None:
        return None
    host = headers.get("host", "")
    if _origin_of(origin) != _origin_of(f"{scheme}://{host}"):
        return f"Origin {origin[:100]!r} is not this server ({scheme}://{host[:100]})"
    return None


def _origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None when unparsable
    (``Origin: null`` from sandboxed frames and file:// pages)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


class CrossSiteCheck:
    """Refuse (403, saying why) a state-changing request sent by a web page of another origin:
    without this any page the user visits could POST questions, audio (``speak=true`` talks on
    the device) or push-to-talk to a server on their machine or network, since a plain form POST
    needs no CORS preflight. Applies to every method but GET/HEAD/OPTIONS, whatever the route, so
    a new route cannot forget it. See :func:`cross_site_reason` for the rule."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            reason = cross_site_reason(Headers(scope=scope), scope.get("scheme", "http"))
            if reason is not None:
                await _refuse(
                    send,
                    403,
                    f"cross-site {scope['method']} refused: {reason}; state-changing requests are "
                    "accepted from this server's own page and from clients that send no Origin (curl, SDKs)",
                    close=True,
                )
                return
        await self.app(scope, receive, send)


# The token travels in an HTTP header: printable ASCII, no spaces.
TOKEN_ALPHABET = frozenset(string.ascii_letters + string.digits + string.punctuation)
MIN_TOKEN_CHARS = 16
MIN_TOKEN_BITS = 64.0
TOKEN_RULE = (
    f"a token needs at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces, varied enough "
    f"that length x log2(distinct characters) >= {MIN_TOKEN_BITS:g} (a random 16-character token has 64 "
    "bits); make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
)


class WeakTokenError(ValueError):
    """A bearer token anyone could guess or that cannot be sent in a header; says the rule."""


def check_token_strength(token: str) -> None:
    """Raise :class:`WeakTokenError` for a token under :data:`TOKEN_RULE`. The estimate
    (length x log2 of the distinct characters used) is a floor that catches short, repeated or
    few-symbol tokens ("aaaa...", "1234123412341234"), not a proof of strength; written here
    rather than taken from a password-strength library because the rule must be stated exactly
    in the error, and a generated token passes it with room to spare. The message never
    contains the token."""
    bad = sorted({c for c in token if c not in TOKEN_ALPHABET})
    if bad:
        raise WeakTokenError(
            f"the bearer token has {len(bad)} character(s) outside printable ASCII, or spaces: {TOKEN_RULE}"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise WeakTokenError(f"the bearer token is {len(token)} characters: {TOKEN_RULE}")
    distinct = len(set(token))
    bits = len(token) * math.log2(distinct) if distinct > 1 else 0.0
    if bits < MIN_TOKEN_BITS:
        raise WeakTokenError(
            f"the bearer token is {len(token)} characters from only {distinct} distinct ones "
            f"(about {bits:.0f} bits): {TOKEN_RULE}"
        )


class LoginBackoff:
    """Slows down token guessing: after ``free_failures`` wrong tokens from one client (an IPv4
    address, or an IPv6 /64, which one host can fill), each further attempt must wait
    ``base_s`` x 2^k seconds (up to ``max_s``) after the last failure, else 429 with
    ``Retry-After``. A correct token clears the client; a client with no failure for
    ``forget_s`` starts afresh. At most ``max_clients`` are remembered (least recently failed
    forgotten first), so memory stays bounded whatever an attacker does."""

    def __init__(
        self,
        free_failures: int = 5,
        base_s: float = 1.0,
        max_s: float = 60.0,
        forget_s: float = 600.0,
        max_clients: int = 4096,
    ) -> None:
        self.free_failures, self.base_s, self.max_s = free_failures, base_s, max_s
        self.forget_s, self.max_clients = forget_s, max_clients
        self._clients: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (failures, last)

    @staticmethod
    def key(client: str) -> str:
        try:
            ip = ipaddress.ip_address(client)
        except ValueError:
            return client[:100]
        if ip.version == 6:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)

    def _failures(self, key: str, now: float) -> tuple[int, float]:
        failures, last = self._clients.get(key, (0, 0.0))
        return (0, 0.0) if now - last > self.forget_s else (failures, last)

    def wait_s(self, client: str, now: float | None = None) -> tuple[int, float]:
        """(wrong tokens so far, seconds the client must still wait before its next attempt)."""
        now = time.monotonic() if now is None else now
        failures, last = self._failures(self.key(client), now)
        if failures < self.free_failures:
            return failures, 0.0
        penalty = min(self.max_s, self.base_s * 2 ** (failures - self.free_failures))
        return failures, max(0.0, last + penalty - now)

    def failed(self, client: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        key = self.key(client)
        failures = self._failures(key, now)[0] + 1
        self._clients[key] = (failures, now)
        self._clients.move_to_end(key)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return failures

    def succeeded(self, client: str) -> None:
        self._clients.pop(self.key(client), None)

    def __len__(self) -> int:
        return len(self._clients)


class TokenCheck:
    """With a bearer token, every request needs ``Authorization: Bearer <token>`` (compared with
    :func:`hmac.compare_digest`, constant time) except those for ``public_paths`` (exact) and
    paths under ``public_prefixes``. Middleware rather than a per-route dependency, so a route
    added later (or FastAPI's own ``/openapi.json``) is guarded without anyone remembering to.
    A missing token gets 401; a wrong one 401 and counts towards the client's
    :class:`LoginBackoff`, which answers 429 while it lasts."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        public_paths: frozenset[str],
        public_prefixes: tuple[str, ...] = (),
        backoff: LoginBackoff | None = None,
    ) -> None:
        if not token.strip():
            raise ValueError("the bearer token is blank: pass a real token, or None for no token")
        self.app, self.token = app, token.encode()
        self.public_paths, self.public_prefixes = public_paths, public_prefixes
        self.backoff = backoff if backoff is not None else LoginBackoff()

    def is_public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(self.public_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        header = Headers(scope=scope).get("authorization")
        if header is None:
            await _refuse(
                send,
                401,
                "missing bearer token: send Authorization: Bearer <token> (web page: open /#token=<token>)",
                close=True,
                headers=challenge,
            )
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        failures, wait = self.backoff.wait_s(client)
        if wait > 0:
            await _refuse(
                send,
                429,
                f"{failures} wrong bearer tokens from this client: retry in {math.ceil(wait)} s",
                close=True,
                headers={"Retry-After": str(math.ceil(wait))},
            )
            return
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
            if self.backoff.failed(client) == self.backoff.free_failures + 1:
                log.warning("wrong bearer tokens from %s: slowing down its attempts", client)
            await _refuse(send, 401, "missing or wrong bearer token", close=True, headers=challenge)
            return
        self.backoff.succeeded(client)
        await self.app(scope, receive, send)


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
