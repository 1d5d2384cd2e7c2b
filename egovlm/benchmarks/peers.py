"""Head to head: the same checkpoint and the same keyframes in the runtimes a user would pick instead.

One offline Qwen2.5-VL checkpoint is converted with each peer's own documented tool chain and asked
the same questions about the same K keyframes (identical PNGs at the model's keyframe size):

- llama.cpp through llama-cpp-python: ``convert_hf_to_gguf.py`` (text GGUF + ``--mmproj`` projector,
  from the llama.cpp tree vendored in llama-cpp-python's sdist), Q8_0 / Q4_0 by ``llama_model_quantize``;
  run twice: ``llama.cpp chat`` is the documented ``Qwen25VLChatHandler`` with ``LlamaRAMCache`` on,
  ``llama.cpp reuse`` keeps the KV cache across requests and re-evaluates from the first differing
  chunk, as llama-server's prompt cache does;
- OpenVINO GenAI's ``VLMPipeline`` on an ``optimum-cli export openvino`` folder (fp32 / int8 / int4),
  plain and with ``SchedulerConfig.enable_prefix_caching``;
- ONNX Runtime GenAI, if its model builder produces a model it can run with images (else the error);
- ours: the edge engine with its cached visual prefix on torch and on ONNX Runtime fp32 / int8 / int4.

Per runtime, precision and K: first-question TTFT (new frames, nothing cached), follow-up TTFT (another
question, same frames), TTFT right after one new keyframe arrives (the buffer evicts one, as our engine's
buffer decides: the peers get the same frame list), decode tokens/s, peak RSS of the runtime's process and
greedy-text agreement with ours on torch (same weights: a disagreement beyond quantisation is a conversion
bug). Each runtime runs in its own persistent process with one thread (``peers_worker``); the peers run in
their own venv (``scripts/setup-peers.sh``, ``make bench-peers``). Runtimes are interleaved repeat by
repeat, in a rotating order, so machine noise hits them alike.

    egovlm bench peers --out bench [--model DIR] [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from egovlm import paths
from egovlm.benchmarks.latency import OPTIONS
from egovlm.benchmarks.report import Report, percentiles, save_figure
from egovlm.models.files import keyframe_size_of
from egovlm.models.presets import SHARPEN

QUESTIONS = (  # first question, follow-up on the same frames, question after a new keyframe
    "What did I pick up just before I left the kitchen?",
    "Where did I put the keys after I came back?",
    "What is on the table right now?",
)
SCENARIOS = ("first", "followup", "new_keyframe")
IMAGE_TAG = "<|vision_start|><|image_pad|><|vision_end|>"
DEFAULT_VENV = paths.REPO_ROOT / ".venv-peers"
WORKER = Path(__file__).resolve().with_name("peers_worker.py")
GGUF_WRAPPER = Path(__file__).resolve().with_name("peers_gguf.py")
CONVERT_TIMEOUT_S = 1800


class PeersUnavailableError(RuntimeError):
    """The peers venv is missing or incomplete; the message says how to build it."""


# -- the checkpoint and the frames ---------------------------------------------------------------


def _sharpen(path: Path) -> None:
    """Scale the decoder's 2-D weights: a random-init model with tied embeddings echoes the prompt's
    last token, which would make greedy agreement between runtimes vacuous."""
    from egovlm.models.build import sharpen_decoder

    sharpen_decoder(path, SHARPEN)


def prepare_model(work: Path, model: Path | None, quick: bool) -> Path:
    """The checkpoint every runtime converts: ``model`` as given, else the tiny (quick) or small preset,
    sharpened (built once per work folder)."""
    if model is not None:
        if not (model / "config.json").is_file():
            raise ValueError(f"--model {model}: no config.json there (a Hugging Face model folder is needed)")
        return model
    from egovlm.models.build import build_model

    # quick: nano, not tiny: llama.cpp's mmproj converter maps the merger's ``visual.merger.mlp.{bid}``
    # only for bid < ViT depth, and tiny's 2 blocks fail on mlp.2 ("ValueError: Can not map tensor
    # 'visual.merger.mlp.2.bias'"); real Qwen2.5-VL has 32 blocks.
    kind = "nano" if quick else "small"
    path = work / f"model-{kind}"
    if not (path / ".sharpened").exists():
        build_model(kind, path, seed=0)
        _sharpen(path)
        (path / ".sharpened").write_text(f"{SHARPEN}\n")
    return path


def transformers4_view(model: Path, out: Path) -> Path:
    """The same checkpoint as transformers 4.x reads it, for the peers' converters.

    optimum-intel 2.2 refuses to export Qwen2.5-VL under transformers > 5.0 ("Maximum required is 5.0")
    and llama.cpp's converter pins 4.57, while our checkpoints are saved by transformers 5, whose
    config (``rope_parameters``) and tokenizer config (``TokenizersBackend``, ``extra_special_tokens``)
    4.x cannot read. The view symlinks every file but those two and rewrites them in the 4.x spelling
    of the same values (what Qwen/Qwen2.5-VL-3B-Instruct's own files say); weights are untouched."""
    out.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        dst = out / f.name
        if f.name not in {"config.json", "tokenizer_config.json"} and not dst.exists():
            dst.symlink_to(f.resolve())
    cfg = json.loads((model / "config.json").read_text())
    text = cfg["text_config"]
    rope = text.pop("rope_parameters", None)
    if rope is not None:
        text["rope_theta"] = rope["rope_theta"]
        text["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        "rms_norm_eps",
        "max_position_embeddings",
        "rope_theta",
        "rope_scaling",
    ):
        if key in text:
            cfg.setdefault(key, text[key])
    cfg["vision_config"].pop("rope_parameters", None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tok = json.loads((model / "tokenizer_config.json").read_text())
    if tok.get("tokenizer_class") == "TokenizersBackend":
        tok["tokenizer_class"] = "Qwen2TokenizerFast"
    if isinstance(tok.get("extra_special_tokens"), list):
        tok["additional_special_tokens"] = tok.pop("extra_special_tokens")
    tok.pop("backend", None)
    (out / "tokenizer_config.json").write_text(json.dumps(tok, indent=2) + "\n")
    return out


def _image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A distinct blocky random scene at exactly ``size`` (no keyframe is redundant)."""
    w, h = size
    blocks = rng.integers(0, 256, (h // 14, w // 14, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(blocks, np.ones((14, 14, 1), np.uint8)))


@dataclass(frozen=True)
class FrameSet:
    """K frames, then the frame list after one more keyframe arrived (our buffer's eviction)."""

    frames: list[dict[str, Any]]  # {"path", "t"}
    after_new: list[dict[str, Any]]


def make_frames(folder: Path, k: int, repeat: int, size: tuple[int, int]) -> FrameSet:
    """K + 1 PNGs (lossless, so every runtime decodes identical pixels) and the buffer's choice of
    which keyframe the new one evicts (egovlm.edge.buffer.KeyframeBuffer, as the engine calls it)."""
    from PIL import Image

    from egovlm.descriptor import describe
    from egovlm.edge.buffer import KeyframeBuffer
    from egovlm.frames import resize_for_model

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1000 * k + repeat)
    buf = KeyframeBuffer(capacity=k)
    frames = []
    for i in range(k + 1):
        img = _image(rng, size)
        path = folder / f"k{k}-r{repeat}-{i:02d}.png"
        Image.fromarray(img).save(path)
        t = round(1.0 + 2.0 * i, 1)
        buf.add(t, resize_for_model(img, size), describe(img))
        frames.append({"path": str(path), "t": t})
    held = {kf.t for kf in buf.snapshot().keyframes}
    return FrameSet(frames[:k], [f for f in frames if f["t"] in held])


def render_request(
    template: Callable[..., Any], frames: Sequence[dict[str, Any]], question: str, max_new_tokens: int
) -> dict[str, Any]:
    """The ask request for every worker: the contract's prompt rendered by the model's chat template,
    and the same user turn as text/image parts for chat-message APIs."""
    from egovlm.contract import SYSTEM_PROMPT, build_messages
    from egovlm.frames import Frame

    dummy = np.zeros((28, 28, 3), np.uint8)  # the template renders a placeholder; pixels go by path
    fs = [Frame(index=i + 1, timestamp_s=f["t"], image=dummy) for i, f in enumerate(frames)]
    messages = build_messages(fs, question, OPTIONS, system_prompt=SYSTEM_PROMPT)
    prompt = template(messages, add_generation_prompt=True, tokenize=False)
    if prompt.count(IMAGE_TAG) != len(frames):
        raise ValueError(f"the chat template does not render images as {IMAGE_TAG!r}: cannot map them")
    parts, images = [], iter(frames)
    for item in messages[1]["content"]:
        parts.append({"image": next(images)["path"]} if item["type"] == "image" else dict(item))
    return {
        "op": "ask",
        "frames": list(frames),
        "prompt": prompt,
        "system": SYSTEM_PROMPT,
        "parts": parts,
        "question": question,
        "options": OPTIONS,
        "max_new_tokens": max_new_tokens,
    }


# -- conversions with each peer's tool chain ----------------------------------------------------


@dataclass
class Runtime:
    """One runtime + precision: how to start its worker, or why it cannot run."""

    name: str
    precision: str
    venv: str  # "main" or "peers"
    args: list[str] = field(default_factory=list)
    error: str | None = None
    convert_s: float | None = None


def peers_python(venv: Path) -> Path:
    """The peers venv's interpreter, checked to have every peer runtime; else an actionable error."""
    py = venv / "bin" / "python"
    if not py.exists():
        raise PeersUnavailableError(
            f"no peers venv at {venv}: build it with `make bench-peers` (bash scripts/setup-peers.sh {venv})"
        )
    probe = "import llama_cpp, openvino_genai, onnxruntime_genai, optimum.intel, gguf"
    res = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
    if res.returncode != 0:
        raise PeersUnavailableError(
            f"the peers venv {venv} is incomplete ({res.stderr.strip().splitlines()[-1:]}): "
            f"rerun bash scripts/setup-peers.sh {venv}"
        )
    return py


def _tool(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> str | None:
    """Run a conversion command (``env`` added to ours); None on success, else its last error line (the
    log has the rest)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        try:
            rc = subprocess.run(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                timeout=CONVERT_TIMEOUT_S,
            ).returncode
        except subprocess.TimeoutExpired:
            return f"timed out after {CONVERT_TIMEOUT_S} s (see {log})"
    if rc == 0:
        return None
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln or "not supported" in ln.lower()]
    return (errors or lines or ["exit code " + str(rc)])[-1][:400]


def _timed(fn: Callable[..., str | None], *args: Any) -> tuple[str | None, float]:
    """(fn's error or None, seconds it took)."""
    t0 = time.perf_counter()
    err = fn(*args)
    return err, time.perf_counter() - t0


def convert_llama(py: Path, model: Path, out: Path) -> list[Runtime]:
    """GGUF f32 text model + f32 mmproj with llama.cpp's converter, then Q8_0 and Q4_0 with
    ``llama_model_quantize`` (the C API behind ``llama-quantize``, exposed by llama-cpp-python)."""
    src = py.parents[1] / "llama.cpp-src"
    out.mkdir(parents=True, exist_ok=True)
    f32, mmproj = out / "model-f32.gguf", out / "mmproj-f32.gguf"

    def convert() -> str | None:
        if f32.exists() and mmproj.exists():
            return None
        base = [str(py), str(GGUF_WRAPPER), str(src), str(model), "--outtype", "f32"]
        return _tool([*base, "--outfile", str(f32)], out / "convert.log") or _tool(
            [*base, "--mmproj", "--outfile", str(mmproj)], out / "convert-mmproj.log"
        )

    err, secs = _timed(convert)
    runtimes: list[Runtime] = []
    for precision, ftype in (
        ("fp32", None),
        ("int8", "LLAMA_FTYPE_MOSTLY_Q8_0"),
        ("int4", "LLAMA_FTYPE_MOSTLY_Q4_0"),
    ):
        path = f32 if ftype is None else out / f"model-{ftype.rsplit('_', 2)[-2].lower()}_0.gguf"
        q_err, q_secs = err, 0.0
        if err is None and ftype is not None and not path.exists():
            code = (
                "import sys, llama_cpp as l; p = l.llama_model_quantize_default_params(); "
                f"p.ftype = l.{ftype}; p.nthread = 1; "
                "sys.exit(l.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))"
            )
            q_err, q_secs = _timed(
                _tool, [str(py), "-c", code, str(f32), str(path)], path.with_suffix(".log")
            )
        for kind in ("reuse", "chat"):
            runtimes.append(
                Runtime(
                    f"llama.cpp {kind}",
                    precision,
                    "peers",
                    ["--runtime", f"llama-{kind}", "--model", str(path), "--mmproj", str(mmproj)],
                    error=q_err,
                    convert_s=secs + q_secs,
                )
            )
    return runtimes


OV_FORMATS = {  # optimum-cli export openvino --weight-format ... (int4: symmetric, block 32, every layer)
    "fp32": ["--weight-format", "fp32"],
    "int8": ["--weight-format", "int8"],
    "int4": ["--weight-format", "int4", "--sym", "--group-size", "32", "--ratio", "1.0"],
}


def convert_openvino(py: Path, model: Path, out: Path, precisions: Sequence[str]) -> list[Runtime]:
    """``optimum-cli export openvino --task image-text-to-text`` per precision (optimum-intel)."""
    cli = py.parent / "optimum-cli"
    runtimes = []
    for precision in precisions:
        folder = out / precision
        err, secs = None, 0.0
        if not (folder / "openvino_language_model.xml").exists():
            cmd = [str(cli), "export", "openvino", "--model", str(model), "--task", "image-text-to-text"]
            cmd += [*OV_FORMATS[precision], str(folder)]
            err, secs = _timed(_tool, cmd, out / f"{precision}.log")
        for runtime, label in (
            ("openvino", "OpenVINO GenAI"),
            ("openvino-pc", "OpenVINO GenAI prefix-cache"),
        ):
            runtimes.append(
                Runtime(label, precision, "peers", ["--runtime", runtime, "--model", str(folder)], err, secs)
            )
    return runtimes


def convert_ort_genai(venv: Path, model: Path, out: Path) -> list[Runtime]:
    """ONNX Runtime GenAI's model builder (``python -m onnxruntime_genai.models.builder``). Its 0.18
    builder imports transformers 5 classes (``Qwen3_5ForConditionalGeneration``) while optimum-intel needs
    transformers <= 5.0, so it runs with the main venv's interpreter (transformers 5, onnxruntime, onnx-ir)
    and onnxruntime-genai from ``VENV/ortgenai-main`` (installed there with --no-deps by
    scripts/setup-peers.sh). For Qwen2_5_VLForConditionalGeneration it builds the text decoder only (model
    type ``qwen2_5_vl_text``): no vision encoder, so it cannot answer about frames; the row says so."""
    folder = out / "fp32"
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model), "-o", str(folder)]
    cmd += ["-p", "fp32", "-e", "cpu", "-c", str(out / "cache")]
    env = {"PYTHONPATH": str(venv / "ortgenai-main")}
    err, secs = (None, 0.0)
    if not (folder / "genai_config.json").exists():
        err, secs = _timed(_tool, cmd, out / "builder.log", env)
    if err is None:
        cfg = json.loads((folder / "genai_config.json").read_text())["model"]
        if "vision" not in cfg:
            err = (
                f"the model builder exported model type {cfg.get('type')!r} (the text decoder only, no "
                "vision encoder or embedding model): ONNX Runtime GenAI cannot run it on images"
            )
    return [Runtime("ONNX Runtime GenAI", "fp32", "peers", [], err, secs)]


def _ungated(out: Path) -> Path:
    """Parity thresholds that gate nothing for int8/int4: export's own thresholds are set for trained
    checkpoints, and the sharpened random decoder amplifies quantisation error past them (the small
    preset's int8 export measured logits cosine 0.93 < 0.99). The peers' quantised conversions have no
    gate either; every runtime's agreement with torch is measured and reported instead."""
    path = out / "parity-ungated.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("int8: {}\nint4: {}\n")
    return path


def convert_ours(model: Path, out: Path, precisions: Sequence[str]) -> list[Runtime]:
    """Ours: torch on the checkpoint, and ``egovlm export`` (cpu target) per precision."""
    from egovlm.export.pipeline import ExportOptions, run_export

    runtimes = [Runtime("ours torch", "fp32", "main", ["--runtime", "ours-torch", "--model", str(model)])]
    for precision in precisions:
        folder = out / precision
        err, secs = None, 0.0
        if not (folder / "manifest.json").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a failed export leaves its report only
            t0 = time.perf_counter()
            try:
                res = run_export(
                    ExportOptions(
                        model=str(model),
                        out=folder,
                        target="cpu",
                        precision=precision,
                        parity_prompts=1,
                        frames_per_prompt=2,
                        max_new_tokens=6,
                        threads=1,
                        thresholds=None if precision == "fp32" else _ungated(out),
                    )
                )
                if not res.passed:
                    err = f"egovlm export {precision} failed its parity gate: {res.report.get('parity')}"
            except Exception as e:  # recorded in the row; the other runtimes still run
                err = f"{type(e).__name__}: {e}"
            secs = time.perf_counter() - t0
        runtimes.append(
            Runtime(
                "ours onnx", precision, "main", ["--runtime", "ours-onnx", "--model", str(folder)], err, secs
            )
        )
    return runtimes


# -- workers --------------------------------------------------------------------------------------


class Worker:
    """A runtime's persistent process; requests are JSON lines, answered in order."""

    def __init__(self, rt: Runtime, python: Path, threads: int, n_ctx: int, log: Path) -> None:
        self.rt = rt
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.stderr = log.open("w")
        cmd = [str(python), str(WORKER), *rt.args, "--threads", str(threads), "--n-ctx", str(n_ctx)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env
        )
        self.ready = self._read()
        self.versions = self.ready.get("versions", {})

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"the worker exited (code {self.proc.wait()}); see {self.stderr.name}"}
        return dict(json.loads(line))

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        if self.proc.poll() is not None:
            return {"error": f"the worker exited (code {self.proc.returncode}); see {self.stderr.name}"}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def peak_rss_mb(self) -> float | None:
        """VmHWM: the process's peak resident set so far."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call({"op": "quit"})
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
        self.stderr.close()


# -- the run ----------------------------------------------------------------------------------------


def _row(rt: Runtime, k: int, samples: dict[str, list[dict[str, Any]]], rss: float | None) -> dict[str, Any]:
    def med(scenario: str, key: str) -> float | None:
        vals = [s[key] for s in samples[scenario] if s.get(key) is not None]
        return round(percentiles(vals)[0], 1) if vals else None

    decode = [s["decode_tok_s"] for sc in SCENARIOS for s in samples[sc] if s.get("decode_tok_s")]
    return {
        "runtime": rt.name,
        "precision": rt.precision,
        "k": k,
        "first_ttft_ms": med("first", "ttft_ms"),
        "followup_ttft_ms": med("followup", "ttft_ms"),
        "new_keyframe_ttft_ms": med("new_keyframe", "ttft_ms"),
        "followup_ttft_p95_ms": round(percentiles([s["ttft_ms"] for s in samples["followup"]])[1], 1)
        if samples["followup"]
        else None,
        "decode_tok_s": round(float(np.median(decode)), 1) if decode else None,
        "peak_rss_mb": round(rss, 0) if rss else None,
    }


def _agreement(
    rows_answers: dict[tuple[str, str], dict[tuple[int, int, str], str]], ref: tuple[str, str]
) -> dict:
    """Fraction of answers whose greedy text equals ours-on-torch's for the same frames and question."""
    base = rows_answers.get(ref, {})
    out = {}
    for key, answers in rows_answers.items():
        common = [a for a in answers if a in base]
        out[key] = (sum(answers[a] == base[a] for a in common) / len(common)) if common else None
    return out


def run(
    out: Path,
    model: Path | None = None,
    quick: bool = False,
    ks: Sequence[int] | None = None,
    repeats: int | None = None,
    max_new_tokens: int | None = None,
    threads: int = 1,
    venv: Path = DEFAULT_VENV,
    work: Path | None = None,
    echo: Callable[[str], None] = print,
) -> Report:
    """Convert, measure and write ``out/peers.{json,md,png}``; returns the report. Raises
    :class:`PeersUnavailableError` when the peers venv is missing."""
    ks = list(ks or ((2,) if quick else (1, 8, 16, 32)))
    repeats = repeats or (2 if quick else 3)
    max_new_tokens = max_new_tokens or (8 if quick else 16)
    py = peers_python(venv)
    work = work or out / "peers-work"
    work.mkdir(parents=True, exist_ok=True)
    ckpt = prepare_model(work, model, quick)
    size = keyframe_size_of(ckpt)
    view = transformers4_view(ckpt, work / "checkpoint-transformers4")
    precisions = ("fp32", "int8", "int4")

    echo(f"converting {ckpt} with each runtime's tool chain (cached in {work})")
    runtimes = convert_ours(ckpt, work / "ours", precisions)
    runtimes += convert_llama(py, view, work / "llama.cpp")
    runtimes += convert_openvino(py, view, work / "openvino", precisions)
    runtimes += convert_ort_genai(venv, ckpt, work / "ort-genai")
    for rt in runtimes:
        if rt.error:
            echo(f"  {rt.name} {rt.precision}: not supported: {rt.error}")

    from transformers import AutoProcessor

    template = AutoProcessor.from_pretrained(ckpt).apply_chat_template
    n_ctx = 1024 + max(ks) * (size[0] // 28) * (size[1] // 28) * 2
    workers: list[Worker] = []
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    for rt in runtimes:
        if rt.error or not rt.args:
            continue
        python = Path(sys.executable) if rt.venv == "main" else py
        w = Worker(rt, python, threads, n_ctx, logs / f"{rt.name}-{rt.precision}.log".replace(" ", "_"))
        if "error" in w.ready:
            rt.error = f"the runtime could not load the conversion: {w.ready['error']}"
            echo(f"  {rt.name} {rt.precision}: {rt.error}")
            w.close()
            continue
        workers.append(w)

    load_before = os.getloadavg()
    samples: dict[tuple[str, str, int], dict[str, list[dict[str, Any]]]] = {}
    answers: dict[tuple[str, str], dict[tuple[int, int, str], str]] = {}
    errors: dict[tuple[str, str], str] = {}
    try:
        for k in ks:
            sets = [make_frames(work / "frames", k, r, size) for r in range(-1, repeats)]
            reqs = [
                [
                    render_request(template, fs.frames, QUESTIONS[0], max_new_tokens),
                    render_request(template, fs.frames, QUESTIONS[1], max_new_tokens),
                    render_request(template, fs.after_new, QUESTIONS[2], max_new_tokens),
                ]
                for fs in sets
            ]
            for r, per in enumerate(reqs):  # r = 0 is the warm-up (repeat -1)
                order = workers[r % len(workers) :] + workers[: r % len(workers)] if workers else []
                for w in order:
                    key = (w.rt.name, w.rt.precision)
                    if key in errors:
                        continue
                    w.call({"op": "reset", "capacity": k})
                    for scenario, req in zip(SCENARIOS, per, strict=True):
                        res = w.call(req)
                        if "error" in res:
                            errors[key] = f"K={k} {scenario}: {res['error']}"
                            echo(f"  {w.rt.name} {w.rt.precision}: {errors[key]}")
                            break
                        if r == 0:
                            continue
                        samples.setdefault((w.rt.name, w.rt.precision, k), {s: [] for s in SCENARIOS})[
                            scenario
                        ].append(res)
                        answers.setdefault(key, {})[(k, r, scenario)] = res["text"]
                echo(f"K={k} repeat {r}/{repeats} done" if r else f"K={k} warm-up done")
        rss = {(w.rt.name, w.rt.precision): w.peak_rss_mb() for w in workers}
        versions = {f"{w.rt.name} {w.rt.precision}": w.versions for w in workers}
    finally:
        for w in workers:
            w.close()
    load_after = os.getloadavg()

    agree = _agreement(answers, ("ours torch", "fp32"))
    report = Report(
        "peers",
        params={
            "model": str(model)
            if model
            else f"offline {'nano' if quick else 'small'} preset, decoder sharpened x{SHARPEN}",
            "keyframe_size": list(size),
            "ks": ks,
            "repeats": repeats,
            "max_new_tokens": max_new_tokens,
            "threads_per_runtime": threads,
            "questions": list(QUESTIONS),
            "versions": versions,
            "loadavg_before": list(load_before),
            "loadavg_after": list(load_after),
        },
    )
    for rt in runtimes:
        key = (rt.name, rt.precision)
        if rt.error or key in errors:
            report.rows.append(
                {
                    "runtime": rt.name,
                    "precision": rt.precision,
                    "status": f"not supported: {rt.error or errors[key]}",
                }
            )
            continue
        for k in ks:
            if (rt.name, rt.precision, k) in samples:
                row = _row(rt, k, samples[(rt.name, rt.precision, k)], rss.get(key))
                row["agree_with_torch"] = None if agree.get(key) is None else round(agree[key], 2)
                row["status"] = "ok"
                report.rows.append(row)
    report.summary = followup_verdict(report.rows, [k for k in ks if k >= 16] or [max(ks)])
    report.notes += _notes(runtimes, load_before, load_after, threads)
    report.write(out)
    plot_peers(report, out)
    return report


def followup_verdict(rows: Sequence[dict[str, Any]], ks: Sequence[int]) -> list[dict[str, Any]]:
    """Per K and precision: our best follow-up TTFT against the best peer's (ratio > 1: we are ahead)."""
    out = []
    ok = [r for r in rows if r.get("status") == "ok" and r.get("followup_ttft_ms")]
    for k in ks:
        for precision in ("fp32", "int8", "int4"):
            same = [r for r in ok if r["k"] == k and r["precision"] == precision]
            ours = [r for r in same if r["runtime"].startswith("ours")]
            peers = [r for r in same if not r["runtime"].startswith("ours")]
            if not ours or not peers:
                continue
            best_ours = min(ours, key=lambda r: r["followup_ttft_ms"])
            best_peer = min(peers, key=lambda r: r["followup_ttft_ms"])
            ratio = best_peer["followup_ttft_ms"] / best_ours["followup_ttft_ms"]
            out.append(
                {
                    "metric": f"follow-up TTFT, K={k}, {precision}: best peer / ours",
                    "ours": f"{best_ours['runtime']} {best_ours['followup_ttft_ms']} ms",
                    "best peer": f"{best_peer['runtime']} {best_peer['followup_ttft_ms']} ms",
                    "value": round(ratio, 2),
                    "target": "> 1 (ours ahead)",
                    "met": ratio > 1,
                }
            )
    return out


def _notes(
    runtimes: Sequence[Runtime], before: Sequence[float], after: Sequence[float], threads: int
) -> list[str]:
    conv = ", ".join(
        f"{r.name} {r.precision} {r.convert_s:.0f} s"
        for r in runtimes
        if r.convert_s and r.convert_s >= 0.5 and "chat" not in r.name and "prefix-cache" not in r.name
    )
    return [
        "TTFT: request -> first generated token inside each runtime's process (image decoding excluded for"
        " all). first: new frames, nothing cached; followup: another question on the same frames;"
        " new_keyframe: one keyframe arrives (the buffer evicts one) and a question is asked at once (ours"
        " rebuilds from the first changed frame on the question's path; on the device the worker does it"
        " before the question).",
        "llama.cpp chat = llama-cpp-python's Qwen25VLChatHandler with LlamaRAMCache set: the handler clears"
        " the KV cache on every call (llama_chat_format.py), so every question re-encodes every frame."
        " llama.cpp reuse = the same libmtmd calls keeping the KV cache and re-evaluating from the first"
        " differing chunk (what llama-server's cache_prompt does).",
        "OpenVINO GenAI prefix-cache = VLMPipeline with SchedulerConfig.enable_prefix_caching (continuous"
        " batching backend); the plain pipeline keeps no KV between generate() calls outside chat mode.",
        "agree_with_torch: fraction of greedy answers identical in text to ours on torch fp32 (same frames,"
        " same question); below 1 at fp32 is a conversion difference to investigate, at int8/int4"
        " quantisation.",
        f"One thread per runtime ({threads}); runtimes interleaved repeat by repeat in a rotating order. Load"
        f" average before/after {before[0]:.1f}/{after[0]:.1f}. Conversion times: {conv or 'cached'}.",
    ]


def plot_peers(report: Report, out: Path) -> Path | None:
    """Follow-up TTFT vs K (log y), one line per runtime and precision; the first-question TTFT dashed."""
    rows = [r for r in report.rows if r.get("status") == "ok"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    names = list(dict.fromkeys(r["runtime"] for r in rows))
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}  # one colour per runtime
    styles = {"fp32": "o-", "int8": "s--", "int4": "^:"}  # one line style per precision
    for name in dict.fromkeys((r["runtime"], r["precision"]) for r in rows):
        mine = sorted((r for r in rows if (r["runtime"], r["precision"]) == name), key=lambda r: r["k"])
        style, color = styles.get(name[1], "x-"), colors[name[0]]
        ks = [r["k"] for r in mine]
        left.plot(ks, [r["followup_ttft_ms"] for r in mine], style, color=color, label=f"{name[0]} {name[1]}")
        right.plot(ks, [r["first_ttft_ms"] for r in mine], style, color=color)
    left.set(xlabel="keyframes (K)", ylabel="ms (median)", yscale="log", title="Follow-up question TTFT")
    right.set(
        xlabel="keyframes (K)", ylabel="ms (median)", yscale="log", title="First question TTFT (new frames)"
    )
    fig.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(0.99, 0.5))
    return save_figure(fig, out / "peers.png")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench"))
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--k", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory():
        report = run(a.out, a.model, a.quick, a.k, a.repeats, venv=a.venv)
    print(report.markdown())


if __name__ == "__main__":
    main()
