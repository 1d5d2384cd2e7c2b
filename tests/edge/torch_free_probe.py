"""Run a device code path with ``torch`` and ``transformers`` made unimportable, and report every
attempt to import them (with the importing stack) as JSON on the last line of stdout.

    python tests/edge/torch_free_probe.py SCENARIO [EXPORT_DIR]

Scenarios: ``self-check`` (the blocker catches the torch backend), ``cli`` (``egovlm --help`` and the device commands' help), ``doctor`` (``egovlm doctor
--json``), ``build-engines`` (``egovlm export build-engines`` on EXPORT_DIR: a CPU export, refused
with a message), ``onnx-answer`` (``egovlm edge run --backend onnx``'s runtime on EXPORT_DIR over a
synth:// camera: a question over HTTP with the cached prefix, streamed, equal to the from-scratch
answer; and, where faster-whisper and espeak-ng are installed, a spoken question to
``/v1/ask/audio`` as with ``--voice``). tests/edge/test_torch_free.py runs each in the main venv, where both packages ARE
installed, so an import anywhere on these paths is caught; a device venv can run it as it is.

The blocker makes the packages look absent (ModuleNotFoundError), exactly as on a device install,
so optional probes (doctor's ``import torch``) behave as they will there; the test decides which
attempts are allowed.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
import traceback
from pathlib import Path
from typing import Any

BLOCKED = ("torch", "transformers")
ATTEMPTS: list[dict[str, Any]] = []


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] in BLOCKED:
            stack = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack()[:-1]]
            ours = [s for s in stack if "importlib" not in s and "<frozen" not in s]
            ATTEMPTS.append({"module": fullname, "stack": ours[-8:]})
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by {__file__})", name=fullname)
        return None


def _install() -> None:
    already = [m for m in BLOCKED if m in sys.modules]
    if already:
        raise SystemExit(f"{', '.join(already)} imported before the probe started (sitecustomize?)")
    sys.meta_path.insert(0, _Blocker())


def _invoke(args: list[str]) -> dict[str, Any]:
    from typer.testing import CliRunner

    from egovlm.cli import app

    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return {"args": args, "exit_code": result.exit_code, "output": result.output[-400:]}


def scenario_cli(_: Path | None) -> dict[str, Any]:
    runs = [
        _invoke(args)
        for args in (
            ["--help"],
            ["edge", "--help"],
            ["edge", "run", "--help"],
            ["edge", "ask", "--help"],
            ["doctor", "--help"],
            ["export", "--help"],
            ["export", "build-engines", "--help"],
            ["export", "verify", "--help"],
        )
    ]
    import egovlm.edge.runtime
    import egovlm.edge.server
    import egovlm.edge.voice.pipeline
    import egovlm.export.cli
    import egovlm.export.tensorrt_build  # noqa: F401 (build-engines' module)

    return {"runs": runs}


def scenario_doctor(model_dir: Path | None) -> dict[str, Any]:
    """``egovlm doctor --json`` (with ``--model MODEL_DIR`` when given: a checkpoint's files checked)."""
    from typer.testing import CliRunner

    from egovlm.cli import app

    extra = ["--model", str(model_dir)] if model_dir is not None else []
    result = CliRunner().invoke(app, ["doctor", "--json", *extra])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    checks = json.loads(result.stdout)
    return {"exit_code": result.exit_code, "checks": {c["name"]: c["status"] for c in checks}}


def scenario_build_engines(export_dir: Path | None) -> dict[str, Any]:
    assert export_dir is not None, "build-engines needs EXPORT_DIR"
    return {"runs": [_invoke(["export", "build-engines", str(export_dir)])]}


def scenario_onnx_answer(export_dir: Path | None) -> dict[str, Any]:
    assert export_dir is not None, "onnx-answer needs EXPORT_DIR"
    from fastapi.testclient import TestClient

    from egovlm.edge.runtime import RuntimeOptions, build_runtime
    from egovlm.edge.server import create_app

    rt = build_runtime(
        export_dir,
        "synth://?fps=15&size=320x240&seed=1",
        backend="onnx",
        capacity=3,
        max_new_tokens=8,
        options=RuntimeOptions(),
    )
    rt.start()
    try:
        if not rt.wait_for_keyframes(3, timeout=90):
            raise RuntimeError(f"no keyframes: {rt.status_line()}")
        pieces: list[str] = []
        question = "Où est la tasse ? 🙂"
        cached = rt.ask(question, {"A": "on the table", "B": "in the sink"}, on_text=pieces.append)
        scratch = rt.ask(question, {"A": "on the table", "B": "in the sink"}, use_cache=False)
        voice = _voice(rt)
        with TestClient(create_app(rt, voice=voice)) as client:
            http = client.post("/v1/ask", json={"question": "What is in front of me?"})
            spoken = _ask_by_voice(client) if voice is not None else None
        return {
            "voice": spoken,
            "backend": rt.engine.backend.describe()["backend"],
            "cached": cached.cached,
            "scratch_cached": scratch.cached,
            "tokens_equal": list(cached.token_ids) == list(scratch.token_ids),
            "n_tokens": len(cached.token_ids),
            "streamed_equals_text": "".join(pieces) == cached.text,
            "http_status": http.status_code,
            "http_cached": http.json().get("cached"),
        }
    finally:
        rt.stop()


def scenario_self_check(_: Path | None) -> dict[str, Any]:
    """The blocker itself: the torch backend needs torch, so importing it must be caught."""
    try:
        import egovlm.edge.backends.torch_backend  # noqa: F401
    except ModuleNotFoundError as e:
        return {"refused": str(e)}
    return {"refused": None}


def _voice(rt: Any) -> Any:
    """``edge run --voice``'s assistant (speech recognition + espeak), when this venv has them."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("faster_whisper") is None or shutil.which("espeak-ng") is None:
        return None
    from egovlm.edge.voice.asr import AsrOptions
    from egovlm.edge.voice.pipeline import build_voice

    return build_voice(rt, asr=AsrOptions(threads=1), audio_out="null")


def _ask_by_voice(client: Any) -> dict[str, Any]:
    """A spoken question (espeak-ng) uploaded to ``POST /v1/ask/audio``."""
    from egovlm.edge.voice.audio import wav_bytes
    from egovlm.edge.voice.tts import spoken_clip

    wav = wav_bytes(spoken_clip("Where did I leave my keys?"))
    r = client.post("/v1/ask/audio", content=wav, headers={"Content-Type": "audio/wav"})
    body = r.json()
    return {"status": r.status_code, "transcript": body.get("transcript", {}).get("text", "")}


SCENARIOS = {
    "self-check": scenario_self_check,
    "cli": scenario_cli,
    "doctor": scenario_doctor,
    "build-engines": scenario_build_engines,
    "onnx-answer": scenario_onnx_answer,
}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in SCENARIOS:
        raise SystemExit(f"usage: torch_free_probe.py {{{','.join(SCENARIOS)}}} [EXPORT_DIR]")
    _install()
    report = SCENARIOS[argv[0]](Path(argv[1]) if len(argv) > 1 else None)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None)
    print(json.dumps({"scenario": argv[0], "report": report, "attempts": ATTEMPTS, "loaded": loaded}))


if __name__ == "__main__":
    main(sys.argv[1:])
