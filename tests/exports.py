"""Models and exports the tests share: the sharpened tiny model and quick exports of it.

A random-init model with tied embeddings echoes the prompt's last token forever, which would make
token-equality tests vacuous; :func:`sharpened_tiny` scales the decoder's weight matrices so greedy
answers change token to token. :func:`quick_export` is the export users run, with parity measured on
one short prompt. Used by fixtures in tests/conftest.py and by tests/device/fixture.py.
"""

from __future__ import annotations

from pathlib import Path

SHARPEN = 6.0


def sharpened_tiny(path: Path) -> Path:
    """The tiny preset with its decoder's 2-D weights scaled by SHARPEN, saved as safetensors."""
    import torch

    from egovlm.models import load_model
    from egovlm.models.build import build_model

    build_model("tiny", path, seed=0)
    loaded = load_model(path)
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if "language_model.layers" in name and param.ndim == 2:
                param.mul_(SHARPEN)
    loaded.model.save_pretrained(path, safe_serialization=True)
    return path


def quick_export(
    model: Path, out: Path, target: str = "cpu", precision: str = "fp32", max_new_tokens: int = 6
) -> Path:
    """``egovlm export`` of ``model`` into ``out``, parity on one 2-frame prompt; fails loudly if the
    export did not pass (nothing published)."""
    from egovlm.export.pipeline import ExportOptions, run_export

    result = run_export(
        ExportOptions(
            model=str(model),
            out=out,
            target=target,
            precision=precision,
            parity_prompts=1,
            frames_per_prompt=2,
            max_new_tokens=max_new_tokens,
            threads=1,
        )
    )
    if not result.passed:
        raise AssertionError(
            f"the {target} {precision} export of {model} failed parity: {result.report['parity']}"
        )
    return out
