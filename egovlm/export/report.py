"""report.json + report.md of an export: parity verdict, metrics vs thresholds, sizes, timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from egovlm.atomic import atomic_write_text

REPORT_JSON, REPORT_MD = "report.json", "report.md"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.6f}".rstrip("0")
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    parity = report["parity"]
    verdict = "PASSED" if parity["passed"] else "FAILED: no manifest was written"
    lines = [
        f"# egovlm export: {report['target']} / {report['precision']}",
        "",
        f"Model `{report['model_source']}`; runtime {report['runtime']}; parity **{verdict}**.",
        "",
        "## Parity against PyTorch (fp32)",
        "",
        "| metric | value | threshold |",
        "| --- | --- | --- |",
    ]
    for name, value in parity["metrics"].items():
        bound = parity["thresholds"].get(name)
        lines.append(f"| {name} | {_fmt(value)} | {_fmt(bound) if bound is not None else 'reported'} |")
    lines += ["", "How each graph was run for parity:", ""]
    lines += [f"- {graph}: {method}" for graph, method in parity["methods"].items()]
    if parity["failures"]:
        lines += ["", "Failures:", ""] + [f"- {f}" for f in parity["failures"]]
    if parity.get("accuracy"):
        acc = parity["accuracy"]
        lines += [
            "",
            f"Eval accuracy over {acc['items']} items: reference {acc['reference']:.3f}, "
            f"export {acc['candidate']:.3f} (delta {acc['delta']:+.3f}).",
        ]
    lines += [
        "",
        "## Graphs",
        "",
        "| graph | file | precision | bytes | export s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, g in report["graphs"].items():
        lines.append(
            f"| {name} | {g['file']} | {g['precision']} | {g['bytes']:,} | {g['export_seconds']:.2f} |"
        )
    sizes = report.get("sizes", {})
    if sizes.get("decoder_fp32_bytes"):
        ratio = sizes["decoder_bytes"] / sizes["decoder_fp32_bytes"]
        lines += [
            "",
            f"Decoder {sizes['decoder_bytes']:,} bytes = {ratio:.2f} x its fp32 weights "
            f"({sizes['decoder_fp32_bytes']:,} bytes).",
        ]
    if report.get("quantization"):
        lines += ["", "## Quantisation", "", "```", json.dumps(report["quantization"], indent=2), "```"]
    if report.get("tensorrt"):
        trt = report["tensorrt"]
        lines += ["", "## TensorRT", "", f"Status: **{trt['status']}** ({trt['reason']}).", ""]
        if trt["status"] != "built":
            lines += [
                "Engines were NOT built or verified here. On the device run:",
                "",
                "```",
                trt["build_command"],
                "```",
            ]
        lines += [
            "",
            f"Context limit {trt['plan']['max_context']} tokens, longest prefill "
            f"{trt['plan']['max_prefill']} in chunks of {trt['plan'].get('max_chunk', 'one call')} "
            f"(budget {trt['plan']['budget_bytes'] / 1024**3:.2f} GiB).",
        ]
    if report.get("edgellm"):
        lines += [
            "",
            "## TensorRT Edge-LLM",
            "",
            "```",
            *report["edgellm"]["host_commands"],
            "# on the device:",
            *report["edgellm"]["device_commands"],
            "```",
        ]
    lines += ["", f"Total time {report['seconds']:.1f} s.", ""]
    return "\n".join(lines)


def write_report(root: Path, report: dict[str, Any]) -> None:
    atomic_write_text(root / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    atomic_write_text(root / REPORT_MD, render_markdown(report))
