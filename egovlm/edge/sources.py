"""Camera and stream sources as URIs, mapped to GStreamer pipelines (docs/architecture.md#sources-and-ingest).

Grammar (query parameters are optional; unknown ones are an error, not silently ignored)::

    v4l2:///dev/video0?width=640&height=480&fps=30&format=mjpeg   USB / UVC camera
    csi://0?width=1280&height=720&fps=30                         Jetson CSI camera (nvarguscamerasrc)
    rtsp://user:pass@host:554/stream                             network camera (decodebin picks the codec)
    file:///abs/path/clip.mp4?loop=1&realtime=1                  recorded clip (mp4, mkv, avi, webm, mov);
                                                                 realtime=0: every frame, as fast as consumed
    synth://?fps=10&size=640x480&seed=0&realtime=1               EgoSynth live frames through appsrc
    test://?pattern=ball&fps=30&size=640x480                     videotestsrc

Credentials in a URI (``rtsp://user:password@host/…``, or ``?password=…``-style query values) are
a secret: :func:`parse_source` keeps them only in :attr:`SourceSpec.location` (what GStreamer
opens) and :attr:`SourceSpec.secrets`; ``SourceSpec.uri``, every error message and every pipeline
description printed or logged show them as ``***`` (:func:`redact_uri`, :func:`redact_text`).
Only :class:`egovlm.edge.ingest.Ingest` asks for the real description (``reveal=True``), to build
the pipeline. Percent-encode ``/ ? # @`` inside a user name or password, as the URI standard says.

Every pipeline ends in the same tail: ``videoconvert ! videoscale ! video/x-raw,format=RGB
[,width,height] ! appsink drop=true max-buffers=N`` so ingest gets RGB numpy frames and never
blocks the camera. On Jetson (``nvvidconv`` present) conversion and scaling happen in the
hardware converter first. The whole description is a gst-launch string so
``egovlm edge run --dry-run`` can print exactly what would run, and a user can paste it into
``gst-launch-1.0`` to debug a camera without Python.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

KINDS = ("v4l2", "csi", "rtsp", "file", "synth", "test")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".ts")
TEST_PATTERNS = ("smpte", "ball", "snow", "black", "white", "gradient", "pinwheel", "spokes", "colors")

# Allowed query parameters per scheme (rtsp passes its query through to the camera).
_PARAMS: dict[str, tuple[str, ...]] = {
    "v4l2": ("width", "height", "fps", "format"),
    "csi": ("width", "height", "fps"),
    "file": ("loop", "realtime"),
    "synth": ("fps", "size", "seed", "realtime"),
    "test": ("fps", "size", "pattern"),
}

# Every accepted scheme with its query parameters; RTSP (and its TLS/TCP variants) pass theirs through.
_SCHEMES: dict[str, tuple[str, ...] | None] = {
    k: _PARAMS.get(k) for k in ("v4l2", "csi", "rtsp", "rtsps", "rtspt", "file", "synth", "test")
}

HasElement = Callable[[str], bool]

# --- secrets in URIs ----------------------------------------------------------------------------
# Hand-written (a few regular expressions) because the standard library has no URI redaction and
# the text to clean is not only URIs: GStreamer error messages and pipeline descriptions embed them.

REDACTED = "***"
# Query parameters whose value is a credential (compared case-insensitively, whole name).
SECRET_PARAMS = re.compile(
    r"pass|password|passwd|pwd|secret|token|access_token|auth|authorization|key|apikey|api_key|"
    r"sig|signature|credential|credentials",
    re.IGNORECASE,
)
# Literal secrets shorter than this are masked only where they sit inside a URI (replacing every
# "ab" in a message would garble it; such a password is guessable anyway).
MIN_LITERAL_SECRET = 4
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")
_QUERY_PAIR = re.compile(r"(?P<sep>[?&;])(?P<key>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def redact_uri(uri: str) -> str:
    """``uri`` with its credentials masked: the password of ``user:password@`` (a user name alone
    is masked too: some services put a token there) and the values of query parameters named like
    :data:`SECRET_PARAMS`. Everything else is kept, so the URI still says which camera it is.

    >>> redact_uri("rtsp://admin:s3cret@10.0.0.5/live?channel=1&password=x")
    'rtsp://admin:***@10.0.0.5/live?channel=1&password=***'
    """

    def userinfo(m: re.Match[str]) -> str:
        user, colon, _ = m["userinfo"].partition(":")
        return f"{m['scheme']}{user}:{REDACTED}@" if colon else f"{m['scheme']}{REDACTED}@"

    def pair(m: re.Match[str]) -> str:
        secret = SECRET_PARAMS.fullmatch(unquote(m["key"])) and m["value"]
        return f"{m['sep']}{m['key']}={REDACTED}" if secret else m[0]

    head, hash_, fragment = uri.partition("#")
    base, q, query = head.partition("?")
    redacted = _USERINFO.sub(userinfo, base, count=1)
    if q:
        redacted += _QUERY_PAIR.sub(pair, "?" + query)
    return redacted + hash_ + fragment


def uri_secrets(uri: str) -> tuple[str, ...]:
    """The credential strings in ``uri`` (as written and percent-decoded), longest first: what
    :func:`redact_text` also masks when they turn up outside a URI (a GStreamer message)."""
    found: set[str] = set()
    m = _USERINFO.match(uri)
    if m:
        user, colon, password = m["userinfo"].partition(":")
        found.add(password if colon else user)
    for pm in _QUERY_PAIR.finditer("?" + uri.partition("?")[2].partition("#")[0]):
        if SECRET_PARAMS.fullmatch(unquote(pm["key"])):
            found.add(pm["value"])
    found |= {unquote(s) for s in found}
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URI in it passed through :func:`redact_uri` and every literal secret
    (of at least :data:`MIN_LITERAL_SECRET` characters) replaced by ``***``. For messages that
    may echo a URI: GStreamer errors, pipeline descriptions, exception texts."""
    text = _URI_IN_TEXT.sub(lambda m: redact_uri(m[0]), text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_LITERAL_SECRET:
            text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class UriParts:
    """A source URI split for a scheme's parser: ``shown`` (credentials masked: for messages),
    ``secrets`` (:func:`uri_secrets`), the lower-case ``scheme``, ``netloc``, ``path``, ``query``
    and ``fragment`` as written (still percent-encoded) and the query's allowed parameters (the
    last value of each given, decoded)."""

    raw: str = field(repr=False)
    shown: str
    secrets: tuple[str, ...] = field(repr=False)
    scheme: str
    netloc: str = field(repr=False)
    path: str = field(repr=False)
    query: str = field(repr=False)
    fragment: str = field(repr=False)
    hostname: str | None = field(repr=False)
    params: dict[str, str]


def split_uri(
    uri: str,
    schemes: Mapping[str, tuple[str, ...] | None],
    error: type[ValueError],
    *,
    what: str,
    examples: str,
) -> UriParts:
    """Split and check a source URI against a scheme table: ``schemes`` maps each accepted
    scheme to its allowed query parameters (None: the query is passed through unchecked, as an
    RTSP camera's). Raises ``error`` (the caller's error class) for text that is not a URI, a URI
    :func:`urllib.parse.urlsplit` rejects, an unknown scheme or an unknown parameter; every
    message shows the URI with its credentials masked. Shared by the camera's
    :func:`parse_source` and the microphone's :func:`egovlm.edge.voice.audio.parse_audio_source`."""
    raw = uri.strip()
    shown = redact_uri(raw)
    if "://" not in raw:
        raise error(f"{what} {shown!r} is not a URI; use {examples}")
    try:
        parts = urlsplit(raw)
        hostname = parts.hostname
    except ValueError as e:  # e.g. an unclosed [IPv6] bracket
        raise error(f"{shown}: not a valid URI ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise error(f"{shown}: unknown {what} scheme {scheme!r}; expected one of {', '.join(schemes)}")
    allowed = schemes[scheme]
    params: dict[str, str] = {}
    if allowed is not None:
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(allowed))
        if unknown:
            raise error(f"{shown}: unknown parameter(s) {unknown}; {scheme}:// accepts {list(allowed)}")
        params = {k: v[-1] for k, v in query.items() if v}
    return UriParts(
        raw=raw,
        shown=shown,
        secrets=uri_secrets(raw),
        scheme=scheme,
        netloc=parts.netloc,
        path=parts.path,
        query=parts.query,
        fragment=parts.fragment,
        hostname=hostname,
        params=params,
    )


class SourceError(ValueError):
    """A source URI that is malformed or cannot run on this machine; the message says why and
    what to do instead."""


class UriSpec:
    """What a parsed camera or microphone URI (:class:`SourceSpec`,
    :class:`egovlm.edge.voice.audio.AudioSourceSpec`) knows about its credentials and liveness."""

    kind: str
    secrets: tuple[str, ...]

    def redact(self, text: str) -> str:
        """``text`` safe to show: this source's credentials masked (see :func:`redact_text`)."""
        return redact_text(text, self.secrets)

    @property
    def live(self) -> bool:
        """Live sources keep producing in real time; a file is not live (it can end)."""
        return self.kind != "file"


@dataclass(frozen=True)
class SourceSpec(UriSpec):
    """A parsed source URI. ``uri`` is the URI as shown (credentials masked: safe to log, serve
    and display); ``location`` is the device path, sensor id, stream URL (credentials included:
    never print it) or file path; ``secrets`` are the credentials, for :meth:`redact`."""

    kind: str
    uri: str
    location: str = field(default="", repr=False)
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    loop: bool = False
    realtime: bool = True
    seed: int = 0
    pattern: str = "ball"
    fmt: str = "raw"  # v4l2 only: raw or mjpeg
    extra: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def size(self) -> tuple[int, int] | None:
        return (self.width, self.height) if self.width and self.height else None


@dataclass(frozen=True)
class OutputFormat:
    """What ingest hands to the engine: RGB frames, optionally rescaled and rate-limited."""

    size: tuple[int, int] | None = None
    max_fps: float | None = None
    max_buffers: int = 2


def _int(uri: str, key: str, value: str | None, lo: int = 1) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise SourceError(f"{uri}: {key}={value!r} is not an integer") from None
    if n < lo:
        raise SourceError(f"{uri}: {key}={n} must be >= {lo}")
    return n


def _fps(uri: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        fps = float(value)
    except ValueError:
        raise SourceError(f"{uri}: fps={value!r} is not a number") from None
    if not 0 < fps <= 240:
        raise SourceError(f"{uri}: fps={fps} must be in (0, 240]")
    return fps


def _bool(uri: str, key: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise SourceError(f"{uri}: {key}={value!r} must be 1/0/true/false")


def parse_size(text: str, what: str = "size") -> tuple[int, int]:
    """``"640x480"`` → ``(640, 480)``; the width must be even (RGB row alignment and
    most hardware scalers want it)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise SourceError(f"{what}={text!r} must look like 640x480")
    w, h = int(parts[0]), int(parts[1])
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise SourceError(f"{what}={text!r}: width and height must be in [16, 8192]")
    if w % 2:
        raise SourceError(f"{what}={text!r}: width must be even")
    return w, h


def parse_source(uri: str) -> SourceSpec:
    """Parse and syntax-check a source URI (no device or file access: see :func:`check_source`).
    The URI's credentials stay in ``location``/``secrets`` only; messages show :func:`redact_uri`."""
    parts = split_uri(
        uri,
        _SCHEMES,
        SourceError,
        what="source",
        examples="one of: v4l2:///dev/video0, csi://0, rtsp://host/path, file:///abs/clip.mp4, synth://, test://",
    )
    kind, shown, secrets = parts.scheme, parts.shown, parts.secrets
    if kind in ("rtsp", "rtsps", "rtspt"):
        raw = parts.raw
        after_host = raw.partition("://")[2].partition("@")[2]
        if "@" in after_host or "@" in parts.path + parts.query + parts.fragment:
            # A user name or password holding an unencoded "@", "/", "?" or "#": parsers split it
            # differently (GStreamer at the first "@") and part of the password could be shown as
            # a host or path, so the URI is not echoed.
            raise SourceError(
                "an RTSP URI has '@', '/', '?' or '#' inside its user name or password: percent-encode "
                "them (%40 for @, %2F for /, %3F for ?, %23 for #), e.g. rtsp://user:p%40ss@host/stream"
            )
        if not parts.hostname:
            raise SourceError(f"{shown}: an RTSP URI needs a host, e.g. rtsp://192.168.1.10:554/stream")
        return SourceSpec(kind="rtsp", uri=shown, location=raw, secrets=secrets)
    q = {k: parts.params.get(k) for k in _PARAMS[kind]}
    spec = _PARSERS[kind](shown, parts.netloc, unquote(parts.path), q)
    return replace(spec, secrets=secrets) if secrets else spec


def _parse_v4l2(uri: str, netloc: str, path: str, q: dict[str, str | None]) -> SourceSpec:
    device = path if path else ""
    if netloc:  # v4l2://dev/video0 (two slashes) puts "dev" in the host part
        device = f"/{netloc}{path}" if netloc != "localhost" else path
    if not device.startswith("/dev/"):
        raise SourceError(f"{uri}: expected a device path like v4l2:///dev/video0")
    fmt = (q["format"] or "raw").lower()
    if fmt not in ("raw", "mjpeg"):
        raise SourceError(f"{uri}: format={fmt!r} must be raw or mjpeg")
    return SourceSpec(
        kind="v4l2",
        uri=uri,
        location=device,
        width=_int(uri, "width", q["width"], 16),
        height=_int(uri, "height", q["height"], 16),
        fps=_fps(uri, q["fps"]),
        fmt=fmt,
    )


def _parse_csi(uri: str, netloc: str, path: str, q: dict[str, str | None]) -> SourceSpec:
    sensor = (netloc + path).strip("/") or "0"
    if not sensor.isdigit():
        raise SourceError(f"{uri}: expected a sensor id like csi://0")
    return SourceSpec(
        kind="csi",
        uri=uri,
        location=sensor,
        width=_int(uri, "width", q["width"], 16) or 1280,
        height=_int(uri, "height", q["height"], 16) or 720,
        fps=_fps(uri, q["fps"]) or 30.0,
    )


def _parse_file(uri: str, netloc: str, path: str, q: dict[str, str | None]) -> SourceSpec:
    if netloc and netloc != "localhost":
        raise SourceError(
            f"{uri}: file URIs need an absolute path: file:///abs/path/clip.mp4 (three slashes)"
        )
    if not path.startswith("/"):
        raise SourceError(f"{uri}: file URIs need an absolute path: file:///abs/path/clip.mp4")
    if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
        raise SourceError(f"{uri}: {Path(path).suffix or 'no suffix'} is not a video file ({VIDEO_SUFFIXES})")
    return SourceSpec(
        kind="file",
        uri=uri,
        location=path,
        loop=_bool(uri, "loop", q["loop"], False),
        realtime=_bool(uri, "realtime", q["realtime"], True),
    )


def _parse_synth(uri: str, netloc: str, path: str, q: dict[str, str | None]) -> SourceSpec:
    w, h = parse_size(q["size"], f"{uri}: size") if q["size"] else (320, 240)
    return SourceSpec(
        kind="synth",
        uri=uri,
        location="egosynth",
        width=w,
        height=h,
        fps=_fps(uri, q["fps"]) or 10.0,
        seed=_int(uri, "seed", q["seed"], 0) or 0,
        realtime=_bool(uri, "realtime", q["realtime"], True),
    )


def _parse_test(uri: str, netloc: str, path: str, q: dict[str, str | None]) -> SourceSpec:
    w, h = parse_size(q["size"], f"{uri}: size") if q["size"] else (320, 240)
    pattern = q["pattern"] or "ball"
    if pattern not in TEST_PATTERNS:
        raise SourceError(f"{uri}: pattern={pattern!r} must be one of {TEST_PATTERNS}")
    fps = _fps(uri, q["fps"]) or 30.0
    return SourceSpec(
        kind="test", uri=uri, location="videotestsrc", width=w, height=h, fps=fps, pattern=pattern
    )


_PARSERS: dict[str, Callable[[str, str, str, dict[str, str | None]], SourceSpec]] = {
    "v4l2": _parse_v4l2,
    "csi": _parse_csi,
    "file": _parse_file,
    "synth": _parse_synth,
    "test": _parse_test,
}


# ---------------------------------------------------------------------------------------------
# Pipeline descriptions


def gst_element_exists(name: str) -> bool:
    """Whether this machine's GStreamer has an element (plugins are found at run time)."""
    from egovlm.edge.gst import gst

    return gst().ElementFactory.find(name) is not None


def quote(value: str) -> str:
    """Quote a property value for gst-launch syntax."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fraction(fps: float) -> str:
    """GStreamer framerates are fractions; 29.97 → 2997/100."""
    if float(fps).is_integer():
        return f"{int(fps)}/1"
    return f"{round(fps * 1000)}/1000"


def required_elements(spec: SourceSpec) -> list[str]:
    """The elements a source cannot run without (the tail's elements are always needed)."""
    head = {
        "v4l2": ["v4l2src"] + (["jpegdec"] if spec.fmt == "mjpeg" else []),
        "csi": ["nvarguscamerasrc", "nvvidconv"],
        "rtsp": ["rtspsrc", "decodebin"],
        "file": ["filesrc", "decodebin"],
        "synth": ["appsrc"],
        "test": ["videotestsrc"],
    }[spec.kind]
    return [*head, "videoconvert", "videoscale", "appsink"]


def _head(spec: SourceSpec, has: HasElement) -> list[str]:
    if spec.kind == "v4l2":
        media = "image/jpeg" if spec.fmt == "mjpeg" else "video/x-raw"
        caps = media + _caps_fields(spec.width, spec.height, spec.fps)
        parts = [f"v4l2src device={quote(spec.location)} do-timestamp=true", caps]
        if spec.fmt == "mjpeg":
            parts.append("jpegdec")
        return parts
    if spec.kind == "csi":
        assert spec.fps is not None
        return [
            f"nvarguscamerasrc sensor-id={spec.location}",
            f"video/x-raw(memory:NVMM),width={spec.width},height={spec.height},"
            f"framerate={_fraction(spec.fps)}",
        ]
    if spec.kind == "rtsp":
        return [f"rtspsrc location={quote(spec.location)} latency=200 drop-on-latency=true", "decodebin"]
    if spec.kind == "file":
        return [f"filesrc location={quote(spec.location)}", "decodebin"]
    if spec.kind == "synth":
        assert spec.fps is not None
        caps = (
            f"video/x-raw,format=RGB,width={spec.width},height={spec.height},framerate={_fraction(spec.fps)}"
        )
        return [f"appsrc name=src is-live=true format=time do-timestamp=false caps={caps}"]
    assert spec.fps is not None
    return [
        f"videotestsrc is-live=true pattern={spec.pattern}",
        "video/x-raw" + _caps_fields(spec.width, spec.height, spec.fps),
    ]


def _caps_fields(width: int | None, height: int | None, fps: float | None) -> str:
    fields = ""
    if width and height:
        fields += f",width={width},height={height}"
    if fps:
        fields += f",framerate={_fraction(fps)}"
    return fields


def _tail(spec: SourceSpec, out: OutputFormat, has: HasElement) -> list[str]:
    parts: list[str] = []
    if out.max_fps:
        parts.append(f"videorate drop-only=true max-rate={max(1, round(out.max_fps))}")
    size = "" if out.size is None else f",width={out.size[0]},height={out.size[1]}"
    # Hardware path (Jetson): nvvidconv takes NVMM or system memory, converts and scales on the
    # VIC; videoconvert then only repacks BGRx → RGB. CSI cameras only produce NVMM buffers.
    if spec.kind == "csi" or (has("nvvidconv") and spec.kind in ("v4l2", "rtsp", "file")):
        parts += ["nvvidconv", f"video/x-raw,format=BGRx{size}", "videoconvert"]
    else:
        parts += ["videoconvert", "videoscale"]
    # Files that play "realtime" are paced by the clock like a camera; everything else is
    # delivered as soon as it arrives (live sources are already paced by the device).
    # A file read faster than real time (?realtime=0) is processed frame by frame: appsink
    # back-pressures the decoder instead of dropping.
    sync = "true" if spec.kind == "file" and spec.realtime else "false"
    drop = "false" if spec.kind == "file" and not spec.realtime else "true"
    parts += [
        f"video/x-raw,format=RGB{size}",
        f"appsink name=sink drop={drop} max-buffers={out.max_buffers} sync={sync} "
        "emit-signals=true enable-last-sample=false",
    ]
    return parts


def pipeline_description(
    spec: SourceSpec, out: OutputFormat | None = None, has: HasElement | None = None, *, reveal: bool = False
) -> str:
    """The gst-launch description for a source. ``has`` answers "is this element installed?"
    (defaults to asking GStreamer; tests pass a fake to render the Jetson variant). Credentials
    are masked (``***``) unless ``reveal``: only the code that builds the pipeline reveals them."""
    out = out or OutputFormat()
    has = has or gst_element_exists
    description = " ! ".join(_head(spec, has) + _tail(spec, out, has))
    return description if reveal else spec.redact(description)


def hardware_decoders(has: HasElement) -> list[str]:
    """Hardware decoders that :func:`egovlm.edge.ingest` promotes so decodebin prefers them."""
    return [name for name in ("nvv4l2decoder", "nvjpegdec") if has(name)]


# ---------------------------------------------------------------------------------------------
# Pre-flight checks


def check_source(spec: SourceSpec, has: HasElement | None = None, synth_module: bool = True) -> None:
    """Fail before start, with the fix, when a source cannot run here: a missing element,
    device or file (or, for ``synth://`` with ``synth_module``, the EgoSynth live generator)."""
    has = has or gst_element_exists
    missing = [e for e in required_elements(spec) if not has(e)]
    if spec.kind == "csi" and "nvarguscamerasrc" in missing:
        raise SourceError(
            f"{spec.uri}: nvarguscamerasrc is not installed: csi:// cameras need JetPack's GStreamer on a "
            "Jetson. For a USB camera use v4l2:///dev/videoN (see `egovlm doctor`)."
        )
    if missing:
        raise SourceError(
            f"{spec.uri}: GStreamer element(s) {missing} not found; run scripts/system-deps.sh "
            "or see `egovlm doctor`"
        )
    if spec.kind == "v4l2":
        _check_device(spec)
    elif spec.kind == "file":
        path = Path(spec.location)
        if not path.is_file():
            raise SourceError(f"{spec.uri}: file not found: {path}")
        if not os.access(path, os.R_OK):
            raise SourceError(f"{spec.uri}: file not readable: {path}")
    elif spec.kind == "synth" and synth_module:
        _check_synth(spec)


def _check_device(spec: SourceSpec) -> None:
    dev = Path(spec.location)
    if not dev.exists():
        present = sorted(str(p) for p in Path("/dev").glob("video*"))
        hint = f"cameras present: {present}" if present else "no /dev/video* devices on this machine"
        raise SourceError(f"{spec.uri}: camera {dev} not found ({hint}); see `egovlm doctor`")
    if not stat.S_ISCHR(dev.stat().st_mode):
        raise SourceError(f"{spec.uri}: {dev} is not a character device")
    if not os.access(dev, os.R_OK | os.W_OK):
        raise SourceError(f"{spec.uri}: no permission on {dev}; add the user to the 'video' group")


def _check_synth(spec: SourceSpec) -> None:
    try:
        from egovlm.synth import live  # noqa: F401
    except ImportError as e:
        raise SourceError(f"{spec.uri}: the EgoSynth live generator is not available: {e}") from e


def resolve(
    uri: str, out: OutputFormat | None = None, has: HasElement | None = None
) -> tuple[SourceSpec, str]:
    """Parse, check and describe in one call: what ``edge run`` does before starting."""
    spec = parse_source(uri)
    check_source(spec, has)
    return spec, pipeline_description(spec, out, has)
