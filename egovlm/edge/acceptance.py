"""``egovlm doctor --acceptance EXPORT_DIR``: the one command a person with the device runs and shares.

It answers "does this export work on this board, and how fast?" in five steps, each recorded with its
outcome, its measurements and, when it fails, the error and the fix:

1. ``doctor``: the normal ``egovlm doctor`` checks (GStreamer, cameras, CUDA, TensorRT, JetPack, power
   mode, memory, packages); a ``missing`` check fails the step.
2. ``manifest`` and ``engines``: the export's manifest is loaded and its files re-hashed; for a TensorRT
   target whose engines are not built yet, :func:`egovlm.export.tensorrt_build.build_engines` builds
   them here (minutes on the device; refused with the reason and the fix anywhere else).
3. ``live``: the runtime users run (``egovlm edge run``: camera → keyframes → model, served over HTTP on
   127.0.0.1) for ``seconds`` on the camera (default: the one the doctor found) or ``--source``;
   questions go through ``POST /v1/ask`` with streaming, as the web page sends them. Recorded: the
   client's time to first token and the server's, each answer checked against the prompt contract
   (:func:`egovlm.contract.parse_answer`), ingest fps, dropped frames, RSS and, where CUDA is, device
   memory in use.
4. ``bench``: the latency benchmark (:func:`egovlm.benchmarks.latency.run`, what ``egovlm bench
   latency`` runs) on the same export, cached prefix vs from scratch, written under ``OUT/bench``.
5. One report, ``OUT/acceptance.json`` + ``OUT/acceptance.md``, stamped with the machine (module, L4T,
   JetPack, power mode, clocks), the TensorRT / ONNX Runtime / Python / package versions and the
   export's manifest (target, precision, file hashes).

A failing step never stops the report: it is recorded with its error and the next steps run (those that
need what failed are recorded as skipped, naming why). The exit code is 1 when any step failed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import platform
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from egovlm import paths

StepStatus = Literal["ok", "failed", "skipped"]
FORMAT = "egovlm-acceptance"
FORMAT_VERSION = 1
REPORT = "acceptance"
NO_CAMERA_FIX = (
    "no camera found by the doctor: connect a camera, or pass --source csi://0 (a CSI camera on a "
    "Jetson), --source v4l2:///dev/videoN (USB), --source file:///path/clip.mp4 or --source synth://"
)
RUNTIME_BACKENDS = {"onnxruntime": "onnx", "tensorrt": "tensorrt"}  # manifest runtime -> edge backend
PROFILES_DIR = paths.CONFIGS_DIR / "edge"


@dataclass
class AcceptanceOptions:
    """What to accept and how long to watch. ``None`` fields are derived from the export and the doctor:
    ``backend`` from the manifest's runtime, ``profile`` from its target (configs/edge/<target>.yaml),
    ``source`` from the first camera the doctor found."""

    export_dir: Path
    out: Path
    source: str | None = None
    seconds: float = 120.0
    backend: str | None = None
    profile: str | None = None
    max_new_tokens: int | None = None  # None: the profile's
    think_s: float = 1.0  # pause between questions, so ingest and the keyframe selector keep running
    keyframe_timeout_s: float = 60.0  # how long the live step waits for the first keyframe
    bench: bool = True
    bench_repeats: int = 5  # what `egovlm bench latency --quick` uses
    bench_scratch_repeats: int = 2
    bench_max_new_tokens: int = 8
    threads: int | None = (
        None  # the benchmark's intra-op threads (None: the library default); live uses the profile's
    )


@dataclass
class Step:
    """One step's outcome: measurements in ``data``; on failure the error and, when known, the fix."""

    name: str
    status: StepStatus
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    fix: str | None = None


class StepFailedError(RuntimeError):
    """A step's own verdict (as opposed to an exception from the code it drives): carries the fix and the
    measurements taken before it failed."""

    def __init__(self, message: str, fix: str | None = None, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.fix = fix
        self.data = data or {}


@dataclass
class AcceptanceReport:
    options: AcceptanceOptions
    stamp: dict[str, Any]
    steps: list[Step]
    created_utc: str

    @property
    def passed(self) -> bool:
        return all(s.status != "failed" for s in self.steps)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def to_json(self) -> dict[str, Any]:
        opts = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.options).items()}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_utc": self.created_utc,
            "passed": self.passed,
            "failed_steps": [s.name for s in self.steps if s.status == "failed"],
            "options": opts,
            "stamp": self.stamp,
            "steps": [asdict(s) for s in self.steps],
        }

    def markdown(self) -> str:
        return render_markdown(self)

    def write(self, out: Path) -> Path:
        from egovlm.atomic import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / f"{REPORT}.json", json.dumps(self.to_json(), indent=2, default=str) + "\n")
        atomic_write_text(out / f"{REPORT}.md", self.markdown())
        return out / f"{REPORT}.json"


# --- running steps ----------------------------------------------------------------------------------


def _run_step(name: str, fn: Callable[[], dict[str, Any]], echo: Callable[[str], Any]) -> Step:
    """Run one step; any exception becomes a failed step with its message (never a crash)."""
    echo(f"== {name} ...")
    t0 = time.perf_counter()
    try:
        step = Step(name, "ok", data=fn())
    except StepFailedError as e:
        step = Step(name, "failed", data=e.data, error=str(e), fix=e.fix)
    except Exception as e:  # record and go on: the report must still be written
        tail = traceback.format_exc().strip().splitlines()[-4:]
        step = Step(name, "failed", error=f"{type(e).__name__}: {e}", data={"traceback_tail": tail})
        step.fix = _fix_in(str(e))
    step.seconds = round(time.perf_counter() - t0, 2)
    echo(
        f"== {name}: {step.status.upper()} in {step.seconds:.1f} s"
        + (f": {step.error}" if step.error else "")
    )
    return step


def _fix_in(message: str) -> str | None:
    """The fix the project's own errors already name ("run `egovlm export build-engines DIR`" ...)."""
    for marker in ("Run `", "run `"):
        if marker in message:
            return message[message.index(marker) :].strip()
    return None


def _skipped(name: str, reason: str, echo: Callable[[str], Any]) -> Step:
    echo(f"== {name}: skipped ({reason})")
    return Step(name, "skipped", error=reason)


def run_acceptance(options: AcceptanceOptions, echo: Callable[[str], Any] = print) -> AcceptanceReport:
    """Run every step and return the report. ``options.out/acceptance.{json,md}`` is re-written after
    each step, so even a run that dies hard (a native crash, the board's OOM killer) leaves what it had
    measured until then."""
    from egovlm.edge.doctor import Host, run_checks

    host = Host()
    checks: list[Any] = []
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report = AcceptanceReport(options, stamp(host), [], created)

    def record(step: Step) -> Step:
        report.steps.append(step)
        report.write(options.out)
        return step

    def doctor_step() -> dict[str, Any]:
        checks.extend(run_checks(host))
        return doctor_data(checks)

    record(_run_step("doctor", doctor_step, echo))
    loaded: dict[str, Any] = {}

    def manifest_step() -> dict[str, Any]:
        from egovlm.export.manifest import load_manifest

        loaded["manifest"] = load_manifest(options.export_dir, verify=True)
        return manifest_data(loaded["manifest"])

    record(_run_step("manifest", manifest_step, echo))
    manifest = loaded.get("manifest")
    if manifest is None:
        for name in ("engines", "live", "bench"):
            record(_skipped(name, "the export's manifest did not load (see step manifest)", echo))
        return report
    engines = record(_run_step("engines", lambda: ensure_engines(manifest), echo))
    backend = options.backend or RUNTIME_BACKENDS.get(manifest.runtime, "onnx")
    profile = options.profile or default_profile(manifest.target)
    if engines.status == "failed" and backend == "tensorrt":
        for name in ("live", "bench"):
            record(_skipped(name, "the tensorrt backend needs the engines (see step engines)", echo))
        return report
    record(_run_step("live", lambda: live_run(options, backend, profile, checks), echo))
    if options.bench:
        record(_run_step("bench", lambda: bench_run(options, backend, profile), echo))
    else:
        record(_skipped("bench", "--no-bench", echo))
    return report


# --- step 1: doctor ---------------------------------------------------------------------------------


def doctor_data(checks: list[Any]) -> dict[str, Any]:
    """The checks as JSON; a ``missing`` check fails the step, naming each with its fix."""
    from egovlm.edge.doctor import as_json

    data = {"checks": as_json(checks)}
    missing = [c for c in checks if c.status == "missing"]
    if missing:
        raise StepFailedError(
            "doctor: " + "; ".join(f"{c.name}: {c.detail}" for c in missing),
            fix="; ".join(f"{c.name}: {c.fix}" for c in missing if c.fix) or None,
            data=data,
        )
    return data


def default_source(checks: list[Any]) -> str:
    """The first camera the doctor found usable (``v4l2:///dev/videoN``), else :class:`StepFailedError`.
    A Jetson's CSI camera is not a /dev/video* capture device, so it must be named: --source csi://0."""
    for c in checks:
        if c.status == "ok" and c.name.startswith("camera /dev/video"):
            return "v4l2://" + c.name.removeprefix("camera ")
    raise StepFailedError("no --source given and no camera found", fix=NO_CAMERA_FIX)


# --- step 2: manifest and engines -------------------------------------------------------------------


def manifest_data(manifest: Any) -> dict[str, Any]:
    """What the report is stamped with: target, runtime, precision, contract, TensorRT state, the
    exporter's versions and every file's hash (the manifest's own sha256 too)."""
    path = manifest.root / "manifest.json"
    trt = manifest.data.get("tensorrt") or {}
    return {
        "path": str(manifest.root.resolve()),
        "manifest_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "target": manifest.target,
        "runtime": manifest.runtime,
        "precision": manifest.precision,
        "contract_version": manifest.contract_version,
        "keyframe_size": list(manifest.keyframe_size),
        "created_utc": manifest.data.get("created_utc"),
        "exported_with": manifest.data.get("versions", {}),
        "tensorrt": {k: trt.get(k) for k in ("status", "engines", "built_with")} if trt else None,
        "parity_passed": (manifest.data.get("parity") or {}).get("passed"),
        "files": manifest.data.get("files", {}),
    }


def engines_present(manifest: Any) -> bool:
    """True when the manifest says built and every graph's plan file exists."""
    trt = manifest.data.get("tensorrt") or {}
    names = list((trt.get("profiles") or {}).keys())
    paths = [manifest.engine_path(n) for n in names]
    return trt.get("status") == "built" and bool(names) and all(p is not None and p.is_file() for p in paths)


def ensure_engines(manifest: Any) -> dict[str, Any]:
    """Build the TensorRT engines of a TensorRT-target export when they are missing."""
    if manifest.runtime != "tensorrt":
        return {"action": "none", "reason": f"{manifest.target} runs on ONNX Runtime: no engines"}
    if engines_present(manifest):
        trt = manifest.data["tensorrt"]
        return {"action": "present", "engines": trt.get("engines"), "built_with": trt.get("built_with")}
    from egovlm.export.tensorrt_build import build_command, build_engines

    try:
        engines = build_engines(manifest.root)
    except Exception as e:
        raise StepFailedError(
            f"the TensorRT engines are not built, and building them failed: {e}",
            fix=f"run this acceptance on the device (it builds the engines with JetPack's TensorRT first), "
            f"or build them there with `{build_command(manifest.root)}`",
        ) from e
    return {"action": "built", "engines": engines}


def default_out(export_dir: Path) -> Path:
    """runs/acceptance/<export name>-<UTC time>: one folder per run, nothing overwritten."""
    when = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("runs") / "acceptance" / f"{Path(export_dir).resolve().name}-{when}"


def default_profile(target: str) -> str:
    """configs/edge/<target>.yaml when the export's target has a device profile, else ``cpu``."""
    return target if (PROFILES_DIR / f"{target}.yaml").is_file() else "cpu"


# --- step 3: the live runtime -----------------------------------------------------------------------


@dataclass
class _Sample:
    t: float
    rss_mb: float
    device_mem_used_mb: float | None


def device_memory_mb() -> tuple[float, float] | None:
    """(used, total) MB of CUDA device memory, or None without CUDA. cuda-python's ``cudaMemGetInfo``
    (the device extra ships cuda-python for the TensorRT backend); on a Jetson CPU and GPU share the
    memory, so "used" is the whole board's, and NVIDIA notes it excludes swap."""
    from egovlm.trt_support import cuda_device_error, cuda_runtime

    if cuda_device_error() is not None:  # no cuda-python, driver or GPU (a CPU machine creates no context)
        return None
    err, free, total = cuda_runtime().cudaMemGetInfo()
    if int(err) != 0:
        return None
    return (total - free) / 1024**2, total / 1024**2


class _Sampler:
    """RSS (the runtime's process: server, engine and this client share it) and device memory, every
    ``period_s`` on a background thread."""

    def __init__(self, period_s: float = 1.0) -> None:
        self.samples: list[_Sample] = []
        self._period = period_s
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._gpu = device_memory_mb() is not None
        self._thread = threading.Thread(target=self._loop, name="acceptance-sampler", daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._take()

    def _take(self) -> None:
        from egovlm.benchmarks.soak import process_resources

        rss, _, _ = process_resources()
        gpu = device_memory_mb() if self._gpu else None
        self.samples.append(_Sample(time.monotonic() - self._t0, rss, gpu[0] if gpu else None))

    def _loop(self) -> None:
        while True:
            self._take()
            if self._stop.wait(self._period):
                return


def _questions() -> list[tuple[str, dict[str, str] | None]]:
    """The soak benchmark's questions, multiple-choice and open, alternating."""
    from egovlm.benchmarks.soak import MC_QUESTIONS, OPEN_QUESTIONS

    out: list[tuple[str, dict[str, str] | None]] = []
    for i in range(max(len(MC_QUESTIONS), len(OPEN_QUESTIONS))):
        if i < len(MC_QUESTIONS):
            out.append((MC_QUESTIONS[i][0], dict(MC_QUESTIONS[i][1])))
        if i < len(OPEN_QUESTIONS):
            out.append((OPEN_QUESTIONS[i], None))
    return out


def ask_streaming(http: Any, body: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """POST /v1/ask with ``stream: true`` the way the web page does; returns (the ``answer`` event's
    body, ms until the first ``token`` event arrived here). Raises on an HTTP error or an ``error``
    event."""
    t0 = time.perf_counter()
    first: float | None = None
    answer: dict[str, Any] | None = None
    event = "message"
    with http.stream("POST", "/v1/ask", json={**body, "stream": True}) as r:
        if r.status_code != 200:
            r.read()
            raise RuntimeError(f"POST /v1/ask answered HTTP {r.status_code}: {r.text[:300]}")
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:].strip())
                if event == "token" and first is None:
                    first = (time.perf_counter() - t0) * 1000
                elif event == "answer":
                    answer = data
                elif event == "error":
                    raise RuntimeError(f"the server sent an error event: {data.get('detail')}")
    if answer is None:
        raise RuntimeError("the stream ended without an answer event")
    return answer, first


def check_answer(answer: Mapping[str, Any], options: Mapping[str, str] | None) -> dict[str, Any]:
    """One answer as the report records it: its text re-parsed here with the contract's parser (the
    letters of this question's options, or free text), compared with what the server reported."""
    from egovlm.contract import parse_answer

    text = str(answer.get("text", ""))
    parsed = parse_answer(text, "".join(options) if options else None, options)
    lat = answer.get("latency", {})
    return {
        "text": text,
        "answer": parsed.answer,
        "format_ok": parsed.format_ok,
        "problems": parsed.problems,
        "server_format_ok": answer.get("format_ok"),
        "parser_agrees": answer.get("format_ok") == parsed.format_ok,
        "finish_reason": answer.get("finish_reason"),
        "cached": answer.get("cached"),
        "server_ttft_ms": lat.get("ttft_ms"),
        "total_ms": lat.get("total_ms"),
        "new_tokens": lat.get("n_new_tokens"),
        "decode_tok_s": lat.get("decode_tok_s"),
    }


def live_run(options: AcceptanceOptions, backend: str, profile: str, checks: list[Any]) -> dict[str, Any]:
    """The live step (see the module docstring)."""
    from egovlm.edge.runtime import RuntimeOptions, build_runtime
    from egovlm.edge.sources import check_source, parse_source

    source = options.source or default_source(checks)
    check_source(parse_source(source))  # a wrong camera fails in a second, before the model loads
    t_load = time.perf_counter()
    rt = build_runtime(
        options.export_dir,
        source,
        profile=profile,
        backend=backend,
        max_new_tokens=options.max_new_tokens,
        options=RuntimeOptions(),
    )
    load_s = time.perf_counter() - t_load
    with _Sampler() as sampler:
        rt.start()
        try:
            data = _drive(rt, options)
        finally:
            rt.stop()
    data.update(source=source, backend=backend, profile=profile, model_load_s=round(load_s, 2))
    data["resources"] = _resources(sampler.samples)
    return _verdict(data)


def _drive(rt: Any, options: AcceptanceOptions) -> dict[str, Any]:
    """Wait for a keyframe, then ask questions over HTTP until ``seconds`` have passed."""
    import httpx

    from egovlm.edge.server import create_app
    from egovlm.edge.serving import LoopbackServer

    t0 = time.monotonic()
    if not rt.wait_for_keyframes(1, timeout=options.keyframe_timeout_s):
        raise StepFailedError(
            f"no keyframe within {options.keyframe_timeout_s:g} s: {rt.status_line()}",
            fix="check the source with `egovlm edge run --source … --dry-run` and gst-launch-1.0",
        )
    first_keyframe_s = time.monotonic() - t0
    answers: list[dict[str, Any]] = []
    errors: list[str] = []
    questions = _questions()
    with LoopbackServer(create_app(rt)) as server, httpx.Client(base_url=server.url, timeout=300.0) as http:
        deadline = t0 + options.seconds
        i = 0
        while time.monotonic() < deadline or (not answers and not errors):
            question, opts = questions[i % len(questions)]
            i += 1
            body: dict[str, Any] = {"question": question, "options": opts}
            try:
                answer, client_ttft = ask_streaming(http, body)
            except Exception as e:  # recorded; the run goes on to the deadline
                errors.append(f"{question!r}: {type(e).__name__}: {e}")
            else:
                row = {"question": question, "options": opts, **check_answer(answer, opts)}
                answers.append({**row, "client_ttft_ms": client_ttft, "t_s": round(time.monotonic() - t0, 2)})
            time.sleep(max(0.0, min(options.think_s, deadline - time.monotonic())))
    elapsed = time.monotonic() - t0
    st, eng = rt.ingest_stats(), rt.engine.status()
    return {
        "seconds": round(elapsed, 2),
        "first_keyframe_s": round(first_keyframe_s, 2),
        "answers": answers,
        "errors": errors,
        "ingest": st.to_dict() if st else None,
        "ingest_fps_mean": round(st.frames_received / st.uptime_s, 2) if st and st.uptime_s > 0 else None,
        "engine": asdict(eng),
    }


def _resources(samples: list[_Sample]) -> dict[str, Any]:
    rss = [s.rss_mb for s in samples]
    gpu = [s.device_mem_used_mb for s in samples if s.device_mem_used_mb is not None]
    total = device_memory_mb()
    return {
        "samples": len(samples),
        "rss_mb_start": round(rss[0], 1) if rss else None,
        "rss_mb_end": round(rss[-1], 1) if rss else None,
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "device_mem_used_mb_max": round(max(gpu), 1) if gpu else None,
        "device_mem_total_mb": round(total[1], 1) if total else None,
        "device_mem_note": None if gpu else "no CUDA device visible to cuda-python: not measured",
    }


def _verdict(data: dict[str, Any]) -> dict[str, Any]:
    """Summaries of the live step, and :class:`StepFailedError` when it did not work: no answer, a request
    error, a source that delivered nothing or reported errors, or a parser disagreement."""
    from egovlm.benchmarks.report import percentiles

    answers = data["answers"]
    client = [a["client_ttft_ms"] for a in answers if a["client_ttft_ms"] is not None]
    server = [a["server_ttft_ms"] for a in answers if a["server_ttft_ms"] is not None]
    ingest = data["ingest"] or {}
    data["summary"] = {
        "answers": len(answers),
        "errors": len(data["errors"]),
        "format_ok": sum(a["format_ok"] for a in answers),
        "client_ttft_ms_p50_p95": list(percentiles(client)) if client else None,
        "server_ttft_ms_p50_p95": list(percentiles(server)) if server else None,
        "first_answer_client_ttft_ms": client[0] if client else None,
        "ingest_fps_mean": data["ingest_fps_mean"],
        "frames_received": ingest.get("frames_received"),
        "frames_dropped": ingest.get("frames_dropped"),
        "keyframes_taken": ingest.get("keyframes_taken"),
    }
    problems = []
    if not answers:
        problems.append("no question was answered")
    if data["errors"]:
        problems.append(f"{len(data['errors'])} request errors (first: {data['errors'][0]})")
    if not ingest.get("frames_received"):
        problems.append("the source delivered no frame")
    if ingest.get("errors"):
        problems.append(f"{ingest['errors']} ingest errors (last: {ingest.get('last_error')})")
    if any(not a["parser_agrees"] for a in answers):
        problems.append("the server's format_ok disagrees with egovlm.contract.parse_answer")
    if any(not a["text"].strip() for a in answers):
        problems.append("an answer was empty")
    if problems:
        raise StepFailedError("; ".join(problems), data=data)
    return data


# --- step 4: the latency benchmark ------------------------------------------------------------------


def bench_run(options: AcceptanceOptions, backend: str, profile: str) -> dict[str, Any]:
    """``egovlm bench latency`` on this export at K = 1 and the profile's buffer size."""
    from egovlm.benchmarks import latency
    from egovlm.edge.profile import load_profile

    capacity = load_profile(profile).keyframes.capacity
    ks = sorted({1, capacity})
    if len(ks) == 1:
        ks = [1, 2]
    report = latency.run(
        options.out / "bench",
        options.export_dir,
        ks,
        repeats=options.bench_repeats,
        scratch_repeats=options.bench_scratch_repeats,
        max_new_tokens=options.bench_max_new_tokens,
        threads=options.threads,
        backend_kind=backend,
    )
    return {
        "ks": ks,
        "report": str(options.out / "bench" / "latency.json"),
        "rows": report.rows,
        "summary": report.summary,
    }


# --- the stamp --------------------------------------------------------------------------------------


def stamp(host: Any) -> dict[str, Any]:
    """Machine, board, library versions and the commit the report was made with."""
    from importlib import metadata

    from egovlm.benchmarks.report import git_commit, machine_info, package_versions
    from egovlm.edge.doctor import L4T_TO_JETPACK, l4t_release

    l4t = l4t_release(host)
    versions: dict[str, Any] = dict(package_versions())
    for dist in ("tensorrt", "cuda-python", "onnxruntime-gpu", "fastapi", "uvicorn"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    versions["tensorrt_import"] = _tensorrt_import()
    versions["onnxruntime_providers"] = _ort_providers()
    return {
        "machine": machine_info(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "l4t": l4t,
        "jetpack": L4T_TO_JETPACK.get(".".join(l4t.split(".")[:2])) if l4t else None,
        "versions": versions,
        "git_commit": git_commit(),
    }


def _tensorrt_import() -> str:
    """``tensorrt.__version__`` as this interpreter imports it, or why it cannot (the PyPI stub raises)."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as e:
        return f"not importable: {type(e).__name__}: {str(e)[:200]}"
    return str(getattr(trt, "__version__", "?"))


def _ort_providers() -> list[str] | None:
    try:
        return list(importlib.import_module("onnxruntime").get_available_providers())
    except Exception:
        return None


# --- Markdown -----------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " / ".join(_fmt(x) for x in v)
    return str(v)


def render_markdown(report: AcceptanceReport) -> str:
    """The shareable summary: verdict, stamp, one line per step, then the live and bench numbers."""
    st, data = report.stamp, report.to_json()
    m = st["machine"]
    jetson = m.get("jetson") or {}
    lines = [
        f"# egovlm acceptance: {'PASS' if report.passed else 'FAIL'}",
        "",
        f"- created: {report.created_utc}; export: `{report.options.export_dir}`",
        f"- machine: {jetson.get('module') or m['cpu']} ({m['arch']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB); GPU: {m['gpu'] or ('Jetson iGPU' if jetson else 'none')}",
        f"- L4T {st['l4t'] or '-'}, JetPack {st['jetpack'] or '-'}; power mode: "
        f"{(jetson.get('power_mode') or '-').splitlines()[0] if jetson.get('power_mode') else '-'}",
        f"- Python {st['python']['version']}; TensorRT {st['versions']['tensorrt_import']}; onnxruntime "
        f"{st['versions'].get('onnxruntime') or st['versions'].get('onnxruntime-gpu') or '-'} "
        f"({', '.join(st['versions']['onnxruntime_providers'] or [])}); egovlm {st['versions'].get('egovlm')}"
        f" (commit {st['git_commit'] or '-'})",
    ]
    manifest = next((s.data for s in report.steps if s.name == "manifest" and s.status == "ok"), None)
    if manifest:
        lines.append(
            f"- export: target {manifest['target']}, {manifest['runtime']}, {manifest['precision']}, "
            f"contract v{manifest['contract_version']}, manifest sha256 {manifest['manifest_sha256'][:16]}…"
        )
    lines += ["", "| step | status | seconds | error | fix |", "|---|---|---|---|---|"]
    for s in data["steps"]:
        error = (s["error"] or "").replace("|", "\\|").replace("\n", " ")[:300]
        fix = (s["fix"] or "").replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']} | {error} | {fix} |")
    live = next((s.data for s in report.steps if s.name == "live" and s.data.get("summary")), None)
    if live:
        sm, res = live["summary"], live["resources"]
        lines += [
            "",
            f"## Live: {live['seconds']:g} s on `{live['source']}` ({live['backend']}, "
            f"profile {live['profile']})",
            "",
            "| measure | value |",
            "|---|---|",
            f"| answers (contract format followed) | {sm['answers']} ({sm['format_ok']}) |",
            f"| request errors | {sm['errors']} |",
            f"| TTFT ms p50 / p95, client (HTTP, streamed) | {_fmt(sm['client_ttft_ms_p50_p95'])} |",
            f"| TTFT ms p50 / p95, server | {_fmt(sm['server_ttft_ms_p50_p95'])} |",
            f"| first answer TTFT ms (client) | {_fmt(sm['first_answer_client_ttft_ms'])} |",
            f"| model load s / first keyframe s | {_fmt(live['model_load_s'])} / "
            f"{_fmt(live['first_keyframe_s'])} |",
            f"| ingest fps (mean) | {_fmt(sm['ingest_fps_mean'])} |",
            f"| frames received / dropped / keyframes | {sm['frames_received']} / {sm['frames_dropped']} / "
            f"{sm['keyframes_taken']} |",
            f"| RSS MB start / end / max | {_fmt(res['rss_mb_start'])} / {_fmt(res['rss_mb_end'])} / "
            f"{_fmt(res['rss_mb_max'])} |",
            f"| device memory used MB max / total | {_fmt(res['device_mem_used_mb_max'])} / "
            f"{_fmt(res['device_mem_total_mb'])} |",
        ]
    bench = next((s.data for s in report.steps if s.name == "bench" and s.status == "ok"), None)
    if bench:
        from egovlm.benchmarks.report import markdown_table

        cols = (
            "k",
            "mode",
            "ttft_ms_median",
            "ttft_ms_p95",
            "decode_tok_s_median",
            "greedy_tokens_identical",
        )
        rows = [{c: r.get(c) for c in cols} for r in bench["rows"]]
        lines += ["", f"## Latency benchmark (`{bench['report']}`)", "", markdown_table(rows)]
        if bench["summary"]:
            lines += ["", markdown_table(bench["summary"])]
    lines += ["", f"Full data: `{report.options.out / (REPORT + '.json')}`"]
    return "\n".join(lines).rstrip() + "\n"
