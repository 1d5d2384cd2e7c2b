"""Models and exports the tests share: the sharpened tiny model and quick exports of it.

A random-init model with tied embeddings echoes the prompt's last token forever, which would make
token-equality tests vacuous; :func:`sharpened_tiny` scales the decoder's weight matrices so greedy
answers change token to token. :func:`quick_export` is the export users run, with parity measured on
one short prompt. Used by fixtures in tests/conftest.py and by tests/device/fixture.py.
"""

from __future__ import annotations

from pathlib import Path


def sharpened_tiny(path: Path) -> Path:
    """The tiny preset with its decoder's 2-D weights sharpened (egovlm.models.build.sharpen_decoder)."""
    from egovlm.models.build import build_model, sharpen_decoder

    build_model("tiny", path, seed=0)
    return sharpen_decoder(path)


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
