"""``egovlm export``: quantise and compile a checkpoint for a target device.

    egovlm export --model M --out DIR --target {cpu,orin-nano,orin-nx,agx-orin,thor} [--precision P]
    egovlm export build-engines DIR      # on the device: TensorRT engines for a TensorRT-target export
    egovlm export verify DIR             # check a finished export's manifest and file hashes

The main action lives on the group's callback (``invoke_without_command``), so the documented form
``egovlm export --model ...`` works and ``build-engines``/``verify`` are subcommands beside it.
Exit codes: 0 published; 1 parity failed (report only, no manifest); 2 bad input (model, target,
precision, folder, missing tool).
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Export a checkpoint to ONNX (+ TensorRT plan) for a device, with a parity report.",
    invoke_without_command=True,
)


@app.callback()
def export(
    ctx: typer.Context,
    model: str = typer.Option(
        None, help="Model folder (HF format, safetensors) or hub id in the local cache."
    ),
    out: Path = typer.Option(None, help="Output folder (new or empty)."),
    target: str = typer.Option(
        "cpu", help="cpu, orin-nano, orin-nx, agx-orin or thor (configs/export/targets.yaml)."
    ),
    precision: str = typer.Option(None, help="fp32|fp16|int8|int4|fp8 (default: the target's)."),
    backend: str = typer.Option("onnx", help="onnx (ours) or edgellm (NVIDIA TensorRT Edge-LLM's tools)."),
    prompts: int = typer.Option(4, help="Parity prompts (frames + question through the prompt contract)."),
    frames: int = typer.Option(2, help="Keyframes per parity/calibration prompt."),
    max_new_tokens: int = typer.Option(24, help="Greedy tokens per parity prompt."),
    calib_prompts: int = typer.Option(8, help="Calibration prompts for ModelOpt (TensorRT int8/int4/fp8)."),
    data: Path = typer.Option(
        None, help="QA JSONL (e.g. EgoSynth's qa.jsonl) for calibration and parity prompts."
    ),
    eval_set: Path = typer.Option(None, help="QA JSONL with answers: report the accuracy delta."),
    eval_max_new_tokens: int = typer.Option(256, help="Greedy tokens per eval-set answer."),
    thresholds: Path = typer.Option(
        None, help="Parity thresholds YAML (default configs/export/parity.yaml)."
    ),
    edgellm_bin: Path = typer.Option(None, help="bin/ folder of the environment with tensorrt-edgellm."),
    keyframes: int = typer.Option(
        None,
        help="Keyframes the device keeps in the prompt (sizes TensorRT profiles and the fit check; "
        "default: the device profile's keyframes.capacity, configs/edge/TARGET.yaml).",
    ),
    threads: int = typer.Option(
        None, help="CPU threads for torch and ONNX Runtime (1 is fastest on a busy box)."
    ),
) -> None:
    """Export MODEL for TARGET into OUT (see the module docstring)."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None or out is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    from egovlm.export.pipeline import ExportOptions, run_export

    opts = ExportOptions(
        model=model,
        out=out,
        target=target,
        precision=precision,
        backend=backend,
        parity_prompts=prompts,
        frames_per_prompt=frames,
        max_new_tokens=max_new_tokens,
        calib_prompts=calib_prompts,
        data=data,
        eval_set=eval_set,
        eval_max_new_tokens=eval_max_new_tokens,
        thresholds=thresholds,
        edgellm_bin=edgellm_bin,
        threads=threads,
        keyframes=keyframes,
    )
    try:
        result = run_export(opts)
    except _user_errors() as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    metrics = result.report["parity"]["metrics"]
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    for note in result.notes:
        typer.echo(f"note: {note}")
    if not result.passed:
        for failure in result.report["parity"]["failures"]:
            typer.echo(f"parity FAILED: {failure}", err=True)
        typer.echo(f"no manifest written; see {out / 'report.md'}", err=True)
        raise typer.Exit(1)
    typer.echo(f"exported {result.report['target']}/{result.report['precision']} to {out} ({shown})")


def _user_errors() -> tuple[type[BaseException], ...]:
    from egovlm.export.edgellm import EdgeLLMUnavailableError
    from egovlm.export.targets import ExportConfigError
    from egovlm.models.files import ModelLoadError
    from egovlm.schema import DatasetError

    return (ExportConfigError, ModelLoadError, FileExistsError, EdgeLLMUnavailableError, DatasetError)


@app.command("build-engines")
def build_engines(export_dir: Path = typer.Argument(..., help="A finished TensorRT-target export.")) -> None:
    """Build TensorRT engines (strongly typed, profiles from the manifest) on the device."""
    from egovlm.export.manifest import ManifestError
    from egovlm.export.targets import ExportConfigError
    from egovlm.export.tensorrt_build import build_engines as build

    try:
        engines = build(export_dir)
    except (ManifestError, ExportConfigError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"built {', '.join(engines)} in {export_dir}/engines; manifest updated")


@app.command()
def verify(export_dir: Path = typer.Argument(..., help="An export folder.")) -> None:
    """Check the manifest and every file's sha256."""
    from egovlm.export.manifest import ManifestError, load_manifest

    try:
        m = load_manifest(export_dir, verify=True)
    except ManifestError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"ok: {m.target}/{m.precision}, {len(m.data['files'])} files verified")
