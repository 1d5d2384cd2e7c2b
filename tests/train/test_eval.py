"""``egovlm eval``: scoring, per-type accuracy, submission file, resume — and one real tiny-model run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from egovlm.contract import format_answer
from egovlm.train import eval as ev
from egovlm.train.eval import COMPLETIONS, EvalOptions, evaluate


class OrderedModel:
    """Stands in for load_for_eval + greedy: answers the i-th prompt it is asked with the i-th
    scripted completion (items are evaluated in file order), and counts the prompts."""

    def __init__(self, completions: list[str | None]) -> None:
        self.completions = completions
        self.asked: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(ev, "load_for_eval", lambda model, device: (None, None, (112, 84)))
        monkeypatch.setattr(ev, "greedy", self.greedy)

    def greedy(self, model: Any, processor: Any, messages: list[Any], images: list[Any], n: int) -> list[str]:
        out = []
        for _ in messages:
            text = self.completions[len(self.asked)]
            self.asked.append("x")
            out.append(text if text is not None else "no idea")
        return out


def test_metrics_over_a_scripted_run(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from egovlm.schema import read_jsonl

    items = read_jsonl(fixture_data)
    wrong = {i.id: ("A" if i.answer != "A" else "B") for i in items}
    completions: list[str | None] = [
        format_answer("t", [1], items[0].answer or ""),  # colour, right, cites the salient frame
        format_answer("t", [1], wrong[items[1].id]),  # appearance, wrong
        "sure: " + format_answer("t", [], items[2].answer or ""),  # colour, right, bad format
        None,  # appearance, no answer at all
        format_answer("t", [1, 2], items[4].answer or ""),  # colour, right, half-precise citation
        format_answer("t", [4], items[5].answer or ""),  # appearance, right
    ]
    OrderedModel(completions).install(monkeypatch)
    m = evaluate("fake", fixture_data, tmp_path, EvalOptions(frames=4, batch_size=4, progress=False))
    assert m["items"] == 6 and m["answered_items"] == 6 and m["withheld_items"] == 0
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_question_type"] == {
        "appearance": {"items": 3, "accuracy": pytest.approx(1 / 3)},
        "colour": {"items": 3, "accuracy": 1.0},
    }
    assert m["format_failure_rate"] == pytest.approx(2 / 6)
    assert m["no_answer_rate"] == pytest.approx(1 / 6)
    # Salient frames (nearest to each clip's event): fx00 → 1, fx04 → 1; only those two cite it.
    assert m["keyframe_items"] == 6
    assert m["keyframe_f1"] == pytest.approx((1.0 + 2 / 3) / 6)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["accuracy"] == m["accuracy"]
    assert not (tmp_path / "submission.json").exists()  # every item had a public answer


def test_resume_skips_done_ids_and_drops_a_torn_line(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = OrderedModel(["<answer>A</answer>"] * 6)
    first.install(monkeypatch)
    evaluate("fake", fixture_data, tmp_path, EvalOptions(frames=4, batch_size=2, progress=False, limit=3))
    assert len(first.asked) == 3
    sink = tmp_path / COMPLETIONS
    with sink.open("a") as f:
        f.write('{"id": "fx03", "torn')  # killed mid-write
    second = OrderedModel(["<answer>B</answer>"] * 6)
    second.install(monkeypatch)
    m = evaluate("fake", fixture_data, tmp_path, EvalOptions(frames=4, batch_size=2, progress=False))
    assert len(second.asked) == 3  # fx03..fx05 only
    rows = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"fx{i:02d}" for i in range(6)]
    assert [r["predicted"] for r in rows] == ["A"] * 3 + ["B"] * 3
    assert m["items"] == 6


def test_withheld_answers_produce_a_submission_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset_factory: Any
) -> None:
    data = dataset_factory(tmp_path / "withheld", clips=3, answered=False)
    OrderedModel([format_answer("t", [1], "C"), "no letter", format_answer("t", [2], "A")]).install(
        monkeypatch
    )
    m = evaluate("fake", data, tmp_path / "out", EvalOptions(frames=4, progress=False))
    assert m["accuracy"] is None and m["withheld_items"] == 3
    sub = json.loads((tmp_path / "out" / "submission.json").read_text())
    assert sub == {"fx00": 2, "fx01": -1, "fx02": 0}


def test_real_tiny_model_end_to_end(fixture_data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    m = evaluate(
        str(tiny_model_dir),
        fixture_data,
        tmp_path,
        EvalOptions(frames=4, batch_size=3, max_new_tokens=12, progress=False),
    )
    rows = [json.loads(line) for line in (tmp_path / COMPLETIONS).read_text().splitlines()]
    assert len(rows) == 6 and m["items"] == 6
    assert all("<|image_pad|>" not in r["completion"] for r in rows)
    assert all(r["frame_times"] == sorted(r["frame_times"]) and len(r["frame_times"]) == 4 for r in rows)
    assert 0.0 <= m["format_failure_rate"] <= 1.0


def test_evals_sharing_a_frame_cache_decode_each_clip_once(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from egovlm.train import sampling

    decoded: list[str] = []
    real_sample = sampling.sample

    def counting_sample(media: Path, *args: Any) -> Any:
        decoded.append(media.name)
        return real_sample(media, *args)

    monkeypatch.setattr(sampling, "sample", counting_sample)
    shared = tmp_path / "frames"
    for run in ("first", "second"):
        OrderedModel(["<answer>A</answer>"] * 6).install(monkeypatch)
        opts = EvalOptions(frames=4, batch_size=3, progress=False, cache_dir=shared)
        evaluate("fake", fixture_data, tmp_path / run, opts)
        assert not (tmp_path / run / "frame_cache").exists()
    assert len(decoded) == 6  # the first eval's six items; the second read them all from the cache
    assert len(list(shared.glob("*/frames.json"))) == 6


def test_cli_passes_the_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixture_data: Path
) -> None:
    from typer.testing import CliRunner

    from egovlm.cli import app

    seen: list[EvalOptions] = []

    def fake_evaluate(model: str, data: Path, out: Path, opts: EvalOptions) -> dict[str, Any]:
        seen.append(opts)
        return ev.metrics([])

    monkeypatch.setattr(ev, "evaluate", fake_evaluate)
    args = ["eval", "--model", "m", "--data", str(fixture_data), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*args, "--cache-dir", str(tmp_path / "c"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen[0].cache_dir == tmp_path / "c"
