"""``--backend edgellm``: drive NVIDIA TensorRT Edge-LLM's quantise/export tools for Qwen2.5-VL.

Edge-LLM lives in its OWN Python environment (its export extra pins torch 2.13 and an older
transformers than ours, docs/architecture.md#dependency-facts), so we never import it: we find its
console scripts (on PATH or in ``--edgellm-bin``, e.g. ``~/edgellm-venv/bin``), build the command
lines and run them as subprocesses, logging each to ``edgellm/logs/``. Commands follow Edge-LLM's
documented Qwen2.5-VL flow (Quick Start / VLM examples, releases 0.4-0.7):
``tensorrt-edgellm-quantize-llm`` -> ``tensorrt-edgellm-export-llm`` -> ``tensorrt-edgellm-export-visual``,
then on the device ``llm_build --vlm`` and ``visual_build`` from its C++ build. Later releases renamed
the tools (``tensorrt-edgellm-quantize llm``, ``trtedge``); when only those exist we say so and print
the commands rather than guess flags.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

QUANTIZE = "tensorrt-edgellm-quantize-llm"
EXPORT_LLM = "tensorrt-edgellm-export-llm"
EXPORT_VISUAL = "tensorrt-edgellm-export-visual"
TOOLS = (QUANTIZE, EXPORT_LLM, EXPORT_VISUAL)
NEWER_TOOLS = ("tensorrt-edgellm-quantize", "trtedge")
# Our precision -> Edge-LLM's --quantization (it documents FP8, INT4 AWQ and NVFP4); fp16 skips quantising.
QUANTIZATION = {"fp16": None, "int4": "int4_awq", "fp8": "fp8"}
INSTALL_HINT = (
    "install it in its own environment, e.g. `python3 -m venv ~/edgellm-venv && "
    "~/edgellm-venv/bin/pip install 'tensorrt-edgellm[export]'`, then pass --edgellm-bin ~/edgellm-venv/bin"
)


class EdgeLLMUnavailableError(RuntimeError):
    """The Edge-LLM tools are missing or the request is unsupported; the message says what to do."""


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]

    def shell(self) -> str:
        return " ".join(_quote(a) for a in self.argv)


def _quote(arg: str) -> str:
    return (
        arg
        if arg and all(c.isalnum() or c in "-_./=:~" for c in arg)
        else "'" + arg.replace("'", "'\\''") + "'"
    )


def find_tool(name: str, bin_dir: Path | None = None) -> str | None:
    if bin_dir is not None:
        candidate = bin_dir / name
        return str(candidate) if candidate.is_file() else None
    return shutil.which(name)


def host_steps(
    model_dir: Path, out_dir: Path, precision: str, bin_dir: Path | None = None, device: str | None = None
) -> list[Step]:
    """The x86-host commands: quantise (unless fp16), export the LLM, export the visual encoder (FP16)."""
    if precision not in QUANTIZATION:
        raise EdgeLLMUnavailableError(
            f"Edge-LLM documents FP8, INT4 AWQ and NVFP4 quantisation; {precision!r} is not one of "
            f"{sorted(QUANTIZATION)} (use --backend onnx for int8 via ModelOpt Q/DQ)"
        )

    def tool(name: str) -> str:
        return str(bin_dir / name) if bin_dir is not None else name

    dev = ["--device", device] if device else []
    steps = []
    llm_source = model_dir
    quant = QUANTIZATION[precision]
    if quant is not None:
        llm_source = out_dir / "quantized"
        steps.append(
            Step(
                "quantize",
                [
                    tool(QUANTIZE),
                    "--model_dir",
                    str(model_dir),
                    "--output_dir",
                    str(llm_source),
                    "--quantization",
                    quant,
                ],
            )
        )
    steps.append(
        Step(
            "export-llm",
            [
                tool(EXPORT_LLM),
                "--model_dir",
                str(llm_source),
                "--output_dir",
                str(out_dir / "onnx" / "llm"),
                *dev,
            ],
        )
    )
    steps.append(
        Step(
            "export-visual",
            [
                tool(EXPORT_VISUAL),
                "--model_dir",
                str(model_dir),
                "--output_dir",
                str(out_dir / "onnx" / "visual"),
                *dev,
            ],
        )
    )
    return steps


def device_steps(
    out_dir: Path,
    max_input_len: int,
    max_kv_cache: int,
    image_tokens: int,
    edgellm_repo: str = "~/TensorRT-Edge-LLM",
) -> list[Step]:
    """The on-device engine builds (Edge-LLM's C++ builders), sized by our profile plan."""
    build = f"{edgellm_repo}/build/examples"
    return [
        Step(
            "llm_build",
            [
                f"{build}/llm/llm_build",
                "--onnxDir",
                str(out_dir / "onnx" / "llm"),
                "--engineDir",
                str(out_dir / "engines" / "llm"),
                "--vlm",
                "--maxBatchSize",
                "1",
                f"--maxInputLen={max_input_len}",
                f"--maxKVCacheCapacity={max_kv_cache}",
                "--minImageTokens",
                str(image_tokens),
                "--maxImageTokens",
                str(image_tokens),
            ],
        ),
        Step(
            "visual_build",
            [
                f"{build}/multimodal/visual_build",
                "--onnxDir",
                str(out_dir / "onnx" / "visual"),
                "--engineDir",
                str(out_dir / "engines" / "visual"),
            ],
        ),
    ]


def check_tools(steps: list[Step], bin_dir: Path | None = None) -> None:
    """Raise :class:`EdgeLLMUnavailableError` naming missing tools, with the install hint and the commands."""
    missing = [Path(s.argv[0]).name for s in steps if find_tool(Path(s.argv[0]).name, bin_dir) is None]
    if not missing:
        return
    where = f"in {bin_dir}" if bin_dir else "on PATH"
    newer = [t for t in NEWER_TOOLS if find_tool(t, bin_dir)]
    note = (
        (
            f" Found newer Edge-LLM tools ({', '.join(newer)}), whose flags differ: run the equivalent "
            "steps by hand."
        )
        if newer
        else ""
    )
    commands = "\n  ".join(s.shell() for s in steps)
    raise EdgeLLMUnavailableError(
        f"TensorRT Edge-LLM tools not found {where}: {', '.join(missing)}. {INSTALL_HINT}.{note}\n"
        f"The commands that would run:\n  {commands}"
    )


def run_steps(steps: list[Step], log_dir: Path) -> None:
    """Run each step, its output to ``log_dir/<name>.log``; stop at the first failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for step in steps:
        log = log_dir / f"{step.name}.log"
        with open(log, "w") as f:
            proc = subprocess.run(step.argv, stdout=f, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Edge-LLM step {step.name!r} exited {proc.returncode} (log {log}):\n{tail}")
