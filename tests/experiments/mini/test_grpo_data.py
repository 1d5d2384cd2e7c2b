"""The GRPO half of ``make repro-mini``: the RL file holds only the GRPO types (held out of the base
stage), multiple-choice and open; the test file holds both forms; every job reads the right file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from egovlm.schema import read_jsonl, write_jsonl
from egovlm.synth import seeds
from egovlm.synth.generate import SynthConfig, build_clip, clip_rows
from egovlm.synth.qa import OPEN_ID_SUFFIX, assign_letters, open_items
from egovlm.train.config import load_config
from experiments.mini import repro
from experiments.mini.base_data import GRPO_TYPES


@pytest.fixture(scope="module")
def egosynth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The qa.jsonl and open.jsonl EgoSynth writes for 12 planned 16 s clips (no rendering: the
    questions come from the clip plans, as ``egovlm data synth`` makes them)."""
    out = tmp_path_factory.mktemp("rl_train")
    cfg = SynthConfig(size=(160, 120), fps=10, duration=16.0)
    drafts = [d for i in range(12) for d in clip_rows(build_clip("train", 0, i, cfg))[3]]
    letters = np.random.default_rng(seeds.letters_sequence("train", 0))
    write_jsonl(out / "qa.jsonl", assign_letters(drafts, letters))
    write_jsonl(out / "open.jsonl", open_items(drafts))
    return out


def test_the_rl_file_holds_only_grpo_types_with_the_open_last_pickup_rows(egosynth: Path) -> None:
    out = repro.write_grpo_data(egosynth)
    assert out == egosynth / repro.GRPO_QA
    rows = read_jsonl(out)
    every = read_jsonl(egosynth / "qa.jsonl") + read_jsonl(egosynth / "open.jsonl")
    assert {r.question_type for r in every} - set(GRPO_TYPES)  # the source has base types to drop
    assert rows and all(r.question_type in GRPO_TYPES for r in rows)
    assert [r.id for r in rows] == [r.id for r in every if r.question_type in GRPO_TYPES]  # all of them
    opened = [r for r in rows if r.options is None]
    assert opened and all(r.question_type == "last_pickup" and r.id.endswith(OPEN_ID_SUFFIX) for r in opened)
    assert not any(r.question_type == "first_pickup" for r in rows)  # its open form is a base type
    mc = {r.question_type for r in rows if r.options is not None}
    assert {"last_pickup", "where_ended", "order"} <= mc
    # mixed.jsonl: every GRPO-type row, and BASE_SHARE as many base-type rows, all from the folder
    mixed = read_jsonl(egosynth / repro.MIXED_QA)
    base = [r for r in mixed if r.question_type not in GRPO_TYPES]
    assert sorted(r.id for r in mixed if r.question_type in GRPO_TYPES) == sorted(r.id for r in rows)
    assert len(base) == int(repro.BASE_SHARE * len(rows)) and len({r.id for r in mixed}) == len(mixed)
    assert {r.id for r in base} <= {r.id for r in every} and len({r.question_type for r in base}) >= 3
    assert [r.id for r in mixed] != [r.id for r in rows + base]  # shuffled, not GRPO types first
    # written once: a second call keeps the files (a resumed run trains on the same rows)
    out.write_text(out.read_text().splitlines()[0] + "\n")
    assert len(read_jsonl(repro.write_grpo_data(egosynth))) == 1
    assert read_jsonl(egosynth / repro.MIXED_QA) == mixed


def test_the_test_file_holds_both_forms(egosynth: Path, tmp_path: Path) -> None:
    for name in ("qa.jsonl", "open.jsonl"):
        (tmp_path / name).write_text((egosynth / name).read_text())
    rows = read_jsonl(repro.write_test_qa(tmp_path))
    qa, opened = read_jsonl(tmp_path / "qa.jsonl"), read_jsonl(tmp_path / "open.jsonl")
    assert [r.id for r in rows] == [r.id for r in qa + opened]
    assert len({r.id for r in rows}) == len(rows)


def _commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []
    monkeypatch.setattr(repro, "run", lambda cmd, threads, log=None: seen.append(cmd))
    return seen


def test_grpo_trains_and_evals_fit_the_prior_on_the_rl_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _commands(monkeypatch)
    rl = tmp_path / "data" / "rl_train" / repro.MIXED_QA  # what both recipes name
    repro.grpo_job(tmp_path, "b", 1, 1)()
    repro.prepare_rl_frames(tmp_path)
    repro.eval_job(tmp_path, "base", tmp_path / "pretrain" / "final", 1, False)()
    repro.eval_job(tmp_path, "base", tmp_path / "pretrain" / "final", 1, False, "val", "qa.jsonl")()
    train, prep_a, prep_b, test, val = seen
    assert f"data.train={rl}" in train and "grpo.seed=1" in train
    assert f"data.train={rl}" in prep_a and f"data.train={rl}" in prep_b
    assert str(tmp_path / "data" / "test" / repro.TEST_QA) in test  # MC and open in one eval
    assert str(tmp_path / "data" / "val" / "qa.jsonl") in val
    assert str(tmp_path / "eval_val" / "base") in val  # the base is a publish candidate
    for cmd in (test, val):
        assert cmd[cmd.index("--keyframe-prior-data") + 1] == str(rl)


@pytest.mark.parametrize("arm", ["a", "b"])
def test_grpo_recipes_follow_the_redesign(arm: str) -> None:
    path = repro.ROOT / "experiments" / "mini" / "configs" / f"grpo_{arm}.yaml"
    cfg = load_config(path)
    three_b = load_config(repro.ROOT / "configs" / "egovlm_3b.yaml").rewards
    assert cfg.data.train.endswith(repro.MIXED_QA) and repro.rl_file(str(path)) == repro.MIXED_QA
    assert cfg.rollouts.shuffle_options and cfg.rollouts.drop_uniform_groups
    questions = cfg.grpo["per_device_train_batch_size"] // cfg.grpo["num_generations"]
    assert cfg.grpo["per_device_train_batch_size"] % cfg.grpo["num_generations"] == 0 and questions >= 4
    r = cfg.rewards
    assert (r.keyframe_requires_correct, r.keyframe_beta, r.keyframe_prior) == (
        three_b.keyframe_requires_correct,
        three_b.keyframe_beta,
        three_b.keyframe_prior,
    )
    assert (
        r.keyframe_max_cited is not None and r.keyframe_prior_data == cfg.data.train
    )  # fitted on the RL rows
    assert (r.weights.keyframe > 0) == (arm == "b")
    # every GRPO value that departs from TRL's default says why, on its line
    lines = {line.split(":")[0].strip(): line for line in path.read_text().split("grpo:")[1].splitlines()}
    for key in yaml.safe_load(path.read_text())["grpo"]:
        if key != "num_generations":
            assert "default" in lines[key], key


def test_a_recipe_naming_another_rl_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "odd.yaml").write_text("data:\n  train: runs/mini/data/rl_train/qa.jsonl\n")
    monkeypatch.setattr(repro, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="qa.jsonl"):
        repro.rl_file("odd.yaml")
