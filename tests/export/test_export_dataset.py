"""User data: calibration/parity prompts and an eval set from a QA JSONL (frame folders here), the
accuracy delta in the report, and a clear error for a bad row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egovlm.export.pipeline import ExportOptions, run_export
from egovlm.export.prompts import dataset_prompts, generated_frame
from egovlm.schema import DatasetError


def _dataset(root: Path, answers: list[str]) -> Path:
    rng = np.random.default_rng(3)
    rows = []
    for i, answer in enumerate(answers):
        folder = root / f"clip{i}"
        folder.mkdir(parents=True)
        entries = []
        for k in range(3):
            Image.fromarray(generated_frame(rng, (160, 120), float(k))).save(folder / f"{k}.png")
            entries.append({"file": f"{k}.png", "t": 1.5 * k})
        (folder / "frames.json").write_text(json.dumps(entries))
        rows.append(
            {
                "id": f"q{i}",
                "frames_dir": f"clip{i}",
                "question": "What did I pick up?",
                "options": {"A": "cup", "B": "book"},
                "answer": answer,
                "source": "test",
            }
        )
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dataset_prompts_resize_and_number_frames(tmp_path: Path) -> None:
    prompts = dataset_prompts(
        _dataset(tmp_path, ["A", "B"]), n=5, keyframe_size=(112, 84), frames_per_prompt=2
    )
    assert len(prompts) == 2
    assert [f.index for f in prompts[0].frames] == [1, 2]
    assert prompts[0].frames[0].image.shape == (84, 112, 3) and prompts[1].answer == "B"
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(DatasetError, match="bad.jsonl:1"):
        dataset_prompts(tmp_path / "bad.jsonl", 1, (112, 84))


def test_export_with_data_and_eval_set(tiny_model_dir: Path, tmp_path: Path) -> None:
    qa = _dataset(tmp_path / "data", ["A", "B", "A"])
    result = run_export(
        ExportOptions(
            model=str(tiny_model_dir),
            out=tmp_path / "o",
            precision="int8",
            data=qa,
            eval_set=qa,
            parity_prompts=2,
            max_new_tokens=6,
            eval_max_new_tokens=6,
            threads=1,
        )
    )
    assert result.passed
    accuracy = result.report["parity"]["accuracy"]
    assert accuracy["items"] == 3
    assert accuracy["delta"] == pytest.approx(accuracy["candidate"] - accuracy["reference"])
    assert result.report["parity"]["metrics"]["accuracy_delta"] == accuracy["delta"]
    assert "Eval accuracy over 3 items" in (result.out / "report.md").read_text()
