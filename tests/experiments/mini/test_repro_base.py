"""The committed base model: ``make repro-base`` saves the base stage's final model (with the commit
and timings that made it) and the GRPO experiment starts from that copy instead of retraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.mini import repro


def _base_run(tmp: Path, weights: str) -> Path:
    runs = tmp / "runs"
    final = runs / "pretrain" / "final"
    final.mkdir(parents=True)
    (final / "model.safetensors").write_text(weights)
    (final / "config.json").write_text("{}")
    (final / "optimizer.pt").write_text("pickle")  # never saved
    (runs / repro.CODE).write_text(json.dumps({"commit": "abc1234", "local_changes": False}))
    rows = [{"stage": "data", "seconds": 60.0}, {"stage": "base stage (2 phases)", "seconds": 3000.0}]
    (runs / "timings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for folder, _ in repro.BASE_PHASES:
        (runs / folder).mkdir(parents=True, exist_ok=True)
        (runs / folder / "run.json").write_text(json.dumps({"steps": len(folder)}))
    (runs / "pretrain" / "big.bin").write_text("not a record")
    return runs


def test_save_base_writes_the_model_and_what_made_it_and_replaces_the_old_one(tmp_path: Path) -> None:
    dest = tmp_path / "models" / "egovlm-mini-base"
    repro.save_base(_base_run(tmp_path / "one", "first"), dest)
    repro.save_base(_base_run(tmp_path / "two", "second"), dest)
    assert sorted(p.name for p in dest.iterdir()) == [
        "base.json",
        "config.json",
        "model.safetensors",
        "training",
    ]
    assert (dest / "model.safetensors").read_text() == "second"
    made = json.loads((dest / "base.json").read_text())
    assert made["made_by"]["commit"] == "abc1234"
    assert [t["seconds"] for t in made["timings"]] == [60.0, 3000.0]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["egovlm-mini-base"]  # no partial left


def test_the_experiment_starts_from_the_committed_base(tmp_path: Path) -> None:
    base = tmp_path / "models" / "egovlm-mini-base"
    repro.save_base(_base_run(tmp_path / "made", "weights"), base)
    runs = tmp_path / "experiment"
    repro.use_base(runs, base)
    final = runs / "pretrain" / "final"
    assert (final / "model.safetensors").read_text() == "weights"
    for folder, _ in repro.BASE_PHASES:  # the phases' records, where the report looks for them
        assert json.loads((runs / folder / "run.json").read_text()) == {"steps": len(folder)}
    assert not (runs / "pretrain" / "big.bin").exists()
    (final / "model.safetensors").write_text("kept")  # an interrupted run continues from its copy
    repro.use_base(runs, base)
    assert (final / "model.safetensors").read_text() == "kept"


def test_a_missing_base_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no base model.*make repro-base"):
        repro.use_base(tmp_path / "runs", tmp_path / "models" / "egovlm-mini-base")


def test_an_interrupted_base_stage_runs_only_the_phases_after_the_latest_finished_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(repro, "run", lambda cmd, threads, log=None: ran.append(cmd))
    runs = tmp_path / "runs"
    assert repro.first_pending_phase(runs) == 0 and repro.base_phases_label(runs) == "base stage (4 phases)"
    third = runs / repro.BASE_PHASES[2][0] / "final"  # phase 3 done, phases 1-2's models deleted
    third.mkdir(parents=True)
    (third / "config.json").write_text("{}")
    assert repro.base_phases_label(runs) == "base stage (phases 4-4 of 4)"
    repro.base_stage(runs)
    assert len(ran) == 1
    assert ran[0][ran[0].index("--config") + 1] == repro.BASE_PHASES[3][1]
    assert f"model.init_from={third}" in ran[0] and f"run.output_dir={runs / 'pretrain'}" in ran[0]
    ran.clear()
    repro.base_stage(tmp_path / "empty")  # from scratch: every phase, each from the previous one
    assert [c[c.index("--config") + 1] for c in ran] == [c for _, c in repro.BASE_PHASES]
    assert not any(a.startswith("model.init_from=") for a in ran[0])
    assert all(
        f"model.init_from={tmp_path / 'empty' / f / 'final'}" in c
        for (f, _), c in zip(repro.BASE_PHASES, ran[1:], strict=False)
    )
