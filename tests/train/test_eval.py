"""``egovlm eval``: scoring under both prompts, per-type accuracy, the EgoSchema submission file,
max_new_tokens' default, resume — and real tiny-model runs, one of them across two processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from egovlm.contract import format_answer
from egovlm.train import eval as ev
from egovlm.train.eval import COMPLETIONS, EvalOptions, evaluate

REPO = Path(__file__).resolve().parents[2]


class OrderedModel:
    """Stands in for load_for_eval + greedy: answers the i-th prompt it is asked with the i-th
    scripted completion (items are evaluated in file order), and counts the prompts."""

    def __init__(self, completions: list[str | None]) -> None:
        self.completions = completions
        self.asked: list[str] = []
        self.messages: list[Any] = []
        self.max_new_tokens: list[int] = []
        self.options: list[Any] = []  # per greedy call: the options answers were restricted to (None: free)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(ev, "load_for_eval", lambda model, device: (None, None, (112, 84)))
        monkeypatch.setattr(ev, "greedy", self.greedy)

    def greedy(
        self, model: Any, processor: Any, messages: list[Any], images: list[Any], n: int, options: Any = None
    ) -> list[str]:
        self.messages += messages
        self.options.append(options)
        self.max_new_tokens.append(n)
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
    # What citing without looking earns on the same items (4 frames): cite-all F1 = 2/(4+1); the best
    # fixed frame per type is frame 1 for colour (salient 1, 2, 1) and 2 for appearance (2, 3, 2).
    assert m["keyframe_f1_cite_all"] == pytest.approx(0.4)
    assert m["keyframe_f1_best_fixed_position"] == pytest.approx(4 / 6)
    assert m["keyframe_f1_best_fixed_set"] == pytest.approx(4 / 6)  # here no set beats one frame
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["accuracy"] == m["accuracy"]
    assert (m["prompt"], m["max_new_tokens"], m["processes"]) == ("egovlm", 512, 1)
    assert "default" in m["max_new_tokens_source"]
    assert m["submission"] is None and not (tmp_path / "submission.csv").exists()  # all public, not EgoSchema


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
    # EgoSchema's competition format: a q_uid,answer CSV, every question, 0-based option indices; no
    # parsable letter still gets a row (option A), counted.
    text = (tmp_path / "out" / "submission.csv").read_text()
    assert text == "q_uid,answer\nfx00,2\nfx01,0\nfx02,0\n"
    assert m["submission"] == {"file": "submission.csv", "rows": 3, "no_letter_rows": 1, "no_letter_index": 0}


def test_egoschema_submission_covers_the_questions_with_public_answers_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset_factory: Any
) -> None:
    import csv

    from egovlm.schema import read_jsonl, write_jsonl

    data = dataset_factory(tmp_path / "es", clips=4)
    items = read_jsonl(data)
    rows = [
        i.model_copy(update={"source": "egoschema", "answer": i.answer if k < 2 else None})
        for k, i in enumerate(items)
    ]
    write_jsonl(data, rows)  # two with public answers (EgoSchema's 500), two withheld
    OrderedModel(["B", "the keys", "Answer: D", "(A) it"]).install(monkeypatch)
    m = evaluate("fake", data, tmp_path / "out", EvalOptions(frames=4, prompt="plain", progress=False))
    with (tmp_path / "out" / "submission.csv").open() as f:
        got = list(csv.DictReader(f))
    assert [r["q_uid"] for r in got] == [i.id for i in items]
    assert [int(r["answer"]) for r in got] == [1, 0, 3, 0]
    assert m["submission"]["no_letter_rows"] == 1 and m["answered_items"] == 2


def test_plain_prompt_asks_for_the_letter_only_and_reads_bare_letters(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from egovlm.contract import PLAIN_INSTRUCTION
    from egovlm.schema import read_jsonl

    items = read_jsonl(fixture_data)
    truth = [i.answer or "" for i in items]
    fake = OrderedModel(
        [
            truth[0],
            f"{truth[1]}.",
            f"({truth[2]}) it",
            f"Answer: {truth[3]}",
            "no idea",
            "A" if truth[5] != "A" else "B",
        ]
    )
    fake.install(monkeypatch)
    m = evaluate("fake", fixture_data, tmp_path, EvalOptions(frames=4, prompt="plain", progress=False))
    user = fake.messages[0][1]["content"]
    assert [c["type"] for c in user] == ["image"] * 4 + ["text"]
    assert user[-1]["text"].endswith(PLAIN_INSTRUCTION)
    assert "<answer>" not in json.dumps(fake.messages)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["no_answer_rate"] == pytest.approx(1 / 6)
    assert m["prompt"] == "plain" and m["max_new_tokens"] == 16 and fake.max_new_tokens[0] == 16
    # no grammar asked for, so no format failures and no keyframe F1 are reported
    assert m["format_failure_rate"] is None and m["keyframe_f1"] is None and m["keyframe_items"] == 0
    assert m["keyframe_f1_cite_all"] is None


def test_max_new_tokens_follows_the_training_recipe(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from egovlm.train.eval import load_recipe, resolve_max_new_tokens

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"run": {}, "grpo": {"max_completion_length": 96}}))
    fake = OrderedModel(["<answer>A</answer>"] * 6)
    fake.install(monkeypatch)
    m = evaluate(
        str(run / "final"), fixture_data, tmp_path / "a", EvalOptions(frames=4, progress=False, limit=1)
    )
    assert m["max_new_tokens"] == 96 and fake.max_new_tokens == [96]
    assert m["max_new_tokens_source"] == f"{run / 'config.yaml'}: grpo.max_completion_length"
    qlora = REPO / "configs" / "egovlm_3b_qlora.yaml"
    with_recipe = EvalOptions(recipe=qlora)
    assert resolve_max_new_tokens(with_recipe, "hub/id", load_recipe(with_recipe)) == (
        384,
        f"{qlora}: grpo.max_completion_length",
    )
    (run / "config.yaml").write_text(yaml.safe_dump({"grpo": {}}))  # the recipe left it to TRL
    assert resolve_max_new_tokens(EvalOptions(), str(run / "final"), None)[0] == 512
    assert resolve_max_new_tokens(EvalOptions(max_new_tokens=7), str(run / "final"), None) == (
        7,
        "--max-new-tokens",
    )
    assert resolve_max_new_tokens(EvalOptions(prompt="plain"), str(run / "final"), None)[0] == 16
    assert resolve_max_new_tokens(EvalOptions(), "Qwen/Qwen2.5-VL-3B-Instruct", None)[0] == 512


def test_resume_refuses_to_mix_prompts(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    OrderedModel(["B"] * 6).install(monkeypatch)
    evaluate("fake", fixture_data, tmp_path, EvalOptions(frames=4, prompt="plain", progress=False, limit=2))
    with pytest.raises(ValueError, match="--prompt plain"):
        evaluate("fake", fixture_data, tmp_path, EvalOptions(frames=4, progress=False))


def test_answers_are_restricted_to_the_options_by_default_and_resume_keeps_the_rule(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from egovlm.schema import read_jsonl

    items = read_jsonl(fixture_data)
    model = OrderedModel(["<answer>A</answer>"] * 18)
    model.install(monkeypatch)
    m = evaluate("fake", fixture_data, tmp_path / "o", EvalOptions(frames=4, batch_size=4, progress=False))
    assert m["answers"] == "options"
    assert [o for call in model.options for o in call] == [i.options for i in items]
    free = EvalOptions(frames=4, batch_size=4, progress=False, answers="free")
    assert evaluate("fake", fixture_data, tmp_path / "f", free)["answers"] == "free"
    assert model.options[-2:] == [None, None]
    with pytest.raises(ValueError, match="--answers free"):
        evaluate("fake", fixture_data, tmp_path / "f", EvalOptions(frames=4, progress=False))
    with pytest.raises(ValueError, match="choose one of options, free"):
        evaluate("fake", fixture_data, tmp_path / "x", EvalOptions(frames=4, progress=False, answers="any"))
    plain = EvalOptions(frames=4, progress=False, prompt="plain")  # a bare letter: never restricted
    assert evaluate("fake", fixture_data, tmp_path / "p", plain)["answers"] == "free"


def test_resume_collects_every_ranks_part_of_a_killed_launch(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A two-process eval killed midway leaves completions.rank0/1.jsonl; a rerun (with any number of
    processes) skips their ids, merges everything into completions.jsonl and removes the parts."""
    OrderedModel(["<answer>A</answer>"] * 6).install(monkeypatch)
    evaluate("fake", fixture_data, tmp_path / "ref", EvalOptions(frames=4, progress=False))
    done = [json.loads(line) for line in (tmp_path / "ref" / COMPLETIONS).read_text().splitlines()]
    out = tmp_path / "killed"
    out.mkdir()
    (out / "completions.rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in done[:2]))
    (out / "completions.rank1.jsonl").write_text(json.dumps(done[3]) + "\n" + '{"id": "fx04", "to')
    rerun = OrderedModel(["<answer>B</answer>"] * 6)
    rerun.install(monkeypatch)
    m = evaluate("fake", fixture_data, out, EvalOptions(frames=4, progress=False))
    assert len(rerun.asked) == 3  # fx02, fx04, fx05
    rows = [json.loads(line) for line in (out / COMPLETIONS).read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"fx{i:02d}" for i in range(6)]
    assert [r["predicted"] for r in rows] == ["A", "A", "B", "A", "B", "B"]
    assert not list(out.glob("completions.rank*.jsonl")) and m["items"] == 6


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

    def counting_sample(media: Path, *args: Any, **kwargs: Any) -> Any:
        decoded.append(media.name)
        return real_sample(media, *args, **kwargs)

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
    assert seen[0].max_new_tokens is None and seen[0].prompt == "egovlm" and seen[0].recipe is None
    more = ["--prompt", "plain", "--config", "r.yaml", "--max-new-tokens", "9", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, *more])
    assert result.exit_code == 0, result.output
    assert (seen[1].prompt, seen[1].recipe, seen[1].max_new_tokens) == ("plain", Path("r.yaml"), 9)


def test_cli_rejects_an_unknown_prompt(tmp_path: Path, fixture_data: Path) -> None:
    from typer.testing import CliRunner

    from egovlm.cli import app

    args = [
        "eval",
        "--model",
        "m",
        "--data",
        str(fixture_data),
        "--out",
        str(tmp_path / "o"),
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, [*args, "--prompt", "chatty"])
    assert result.exit_code == 2 and "--prompt must be one of egovlm, plain" in result.output


@pytest.mark.slow
def test_two_processes_give_the_single_process_result(
    fixture_data: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """``accelerate launch`` with the shipped two-process CPU config: the items are split across the
    ranks, a second launch resumes (skips the first launch's ids), and the merged completions,
    metrics and submission equal one process's. Batch size 1: padding a batch can change greedy
    decoding in its last bits, and the two runs batch items differently."""
    import shutil
    import subprocess
    import sys

    from egovlm.schema import read_jsonl, write_jsonl

    data = tmp_path / "data" / "qa.jsonl"
    shutil.copytree(fixture_data.parent, data.parent)
    write_jsonl(
        data,
        [i.model_copy(update={"answer": None}) if k % 3 == 0 else i for k, i in enumerate(read_jsonl(data))],
    )
    opts = EvalOptions(frames=4, batch_size=1, max_new_tokens=10, progress=False)
    single = evaluate(str(tiny_model_dir), data, tmp_path / "one", opts)

    launcher = Path(sys.executable).with_name("accelerate")
    config = REPO / "configs" / "accelerate" / "cpu_2proc.yaml"
    base = [str(launcher), "launch", "--config_file", str(config), "-m", "egovlm.cli", "eval"]
    args = [
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "two"),
        "--frames",
        "4",
    ]
    args += ["--batch-size", "1", "--max-new-tokens", "10", "--device", "cpu"]
    for limit in (["--limit", "3"], []):
        proc = subprocess.run([*base, *args, *limit], capture_output=True, text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def rows(folder: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (tmp_path / folder / COMPLETIONS).read_text().splitlines()]

    two = rows("two")
    assert {r["rank"] for r in two[:3]} == {0, 1} and {r["rank"] for r in two[3:]} == {
        0,
        1,
    }  # both launches split
    strip = lambda rs: [{k: v for k, v in r.items() if k != "rank"} for r in rs]  # noqa: E731
    assert strip(two) == strip(rows("one"))
    multi = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert multi["processes"] == 2
    assert {k: v for k, v in multi.items() if k not in ("processes",)} == {
        k: v for k, v in single.items() if k not in ("processes",)
    }
    assert (tmp_path / "two" / "submission.csv").read_text() == (
        tmp_path / "one" / "submission.csv"
    ).read_text()
    assert not list((tmp_path / "two").glob("completions.rank*.jsonl"))


def test_open_accuracy_per_type_beside_multiple_choice_and_the_positional_baseline(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two multiple-choice rows (one answered with the option's text) and four open ones: accuracies
    are kept apart, each row says its form, and the positional prior fitted on the training rows
    gives the keyframe reward's content-free baseline."""
    from egovlm.schema import read_jsonl, write_jsonl

    items = read_jsonl(fixture_data)
    rows = []
    for k, item in enumerate(items):
        item = item.model_copy(update={"video": str(item.media_path(fixture_data.parent))})
        if k >= 2:  # open: the answer is the text of the correct option
            assert item.options is not None and item.answer is not None
            item = item.model_copy(update={"options": None, "answer": item.options[item.answer]})
        rows.append(item)
    data = tmp_path / "mixed.jsonl"
    write_jsonl(data, rows)
    assert rows[0].options is not None and rows[0].answer is not None
    completions: list[str | None] = [
        format_answer("t", [1], rows[0].options[rows[0].answer]),  # MC, right, as the option's text
        format_answer("t", [1], "A" if rows[1].answer != "A" else "B"),  # MC, wrong, as a letter
        format_answer("t", [1], (rows[2].answer or "").upper() + "."),  # open colour, right
        format_answer("t", [1], (rows[3].answer or "") + "s"),  # open appearance, near miss
        format_answer("t", [1], rows[4].answer or ""),  # open colour, right
        format_answer("t", [1], ""),  # open appearance, empty
    ]
    OrderedModel(completions).install(monkeypatch)
    opts = EvalOptions(frames=4, batch_size=4, progress=False, prior_data=fixture_data)
    m = evaluate("fake", data, tmp_path / "out", opts)
    assert m["answer_forms"] == {"letter": 2, "words": 4} and m["open_items"] == 4
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["mc_answered_with"] == {"letter": 1, "text": 1}
    assert m["open_accuracy"] == pytest.approx(0.5)
    assert m["open_per_question_type"] == {
        "appearance": {"items": 2, "accuracy": 0.0},
        "colour": {"items": 2, "accuracy": 1.0},
    }
    assert m["no_answer_rate"] == pytest.approx(1 / 6)
    done = [json.loads(line) for line in (tmp_path / "out" / COMPLETIONS).read_text().splitlines()]
    assert [r["answer_form"] for r in done] == ["letter"] * 2 + ["words"] * 4
    assert done[0]["predicted"] == rows[0].answer and done[0]["answered_with"] == "text"
    assert done[2]["predicted_text"] == (rows[2].answer or "").upper() + "."
    # The positional prior fitted on the same rows ranks colour's frames 1, 2, … (salient 1, 2, 1) and
    # appearance's 2, 3, … (salient 2, 3, 2). Per row the best prefix: exact (F1 1) for the common
    # frame, the two-frame prefix (F1 2/3) for the odd one: (1 + 2/3 + 1) × 2 / 6.
    assert m["keyframe_f1_positional_prior"] == pytest.approx(8 / 9)
    assert m["keyframe_f1_best_fixed_position"] == pytest.approx(4 / 6)
    assert m["keyframe_prior_data"] == str(fixture_data)


def test_plain_prompt_refuses_open_questions(fixture_data: Path, tmp_path: Path) -> None:
    from egovlm.schema import read_jsonl, write_jsonl

    item = read_jsonl(fixture_data)[0]
    item = item.model_copy(
        update={"video": str(item.media_path(fixture_data.parent)), "options": None, "answer": "the cup"}
    )
    write_jsonl(tmp_path / "open.jsonl", [item])
    with pytest.raises(ValueError, match="open"):
        evaluate(
            "fake", tmp_path / "open.jsonl", tmp_path / "out", EvalOptions(prompt="plain", progress=False)
        )


def test_best_fixed_set_is_the_best_of_all_sets() -> None:
    import itertools
    import random

    from egovlm.train.eval import best_fixed_set
    from egovlm.train.rewards import f1

    # one position scores 1 + 0 + 2/3; the pair {1, 2} scores 2/3 + 2/3 + 1: a set can beat any position
    assert best_fixed_set([[1], [2], [1, 2]], 4) == (pytest.approx(7 / 3), (1, 2))
    assert best_fixed_set([[3], [3], [3, 4]], 4) == (pytest.approx(2 + 2 / 3), (3,))
    rng = random.Random(0)
    for _ in range(40):  # exact: equal to trying every non-empty subset of the n positions
        n = rng.randint(1, 7)
        salient = [rng.sample(range(1, n + 1), rng.randint(1, min(3, n))) for _ in range(rng.randint(1, 12))]
        total, chosen = best_fixed_set(salient, n)
        brute = max(
            sum(f1(subset, t) for t in salient)
            for k in range(1, n + 1)
            for subset in itertools.combinations(range(1, n + 1), k)
        )
        assert total == pytest.approx(brute)
        assert sum(f1(chosen, t) for t in salient) == pytest.approx(total)
        # at most m positions: the best subset of up to m (m = 1: the best single position)
        m = rng.randint(1, n)
        capped, few = best_fixed_set(salient, n, max_size=m)
        brute_m = max(
            sum(f1(subset, t) for t in salient)
            for k in range(1, m + 1)
            for subset in itertools.combinations(range(1, n + 1), k)
        )
        assert capped == pytest.approx(brute_m) and len(few) <= m
    assert best_fixed_set([[1], [2], [1, 2]], 4, max_size=1) == (pytest.approx(5 / 3), (1,))
