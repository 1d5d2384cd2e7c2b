"""Kill-and-resume: a run SIGKILLed after a checkpoint exists, restarted with the same command,
ends at the same step with the same data order as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
STEPS = 8


def command(run_dir: Path, model_dir: Path, data: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "egovlm.cli",
        "train",
        "--config",
        str(REPO / "configs" / "tiny_cpu.yaml"),
        f"run.output_dir={run_dir}",
        f"model.path={model_dir}",
        f"data.train={data}",
        f"grpo.max_steps={STEPS}",
        "grpo.save_steps=2",
        "grpo.save_total_limit=10",
        "grpo.max_completion_length=16",
        "run.plot=false",
    ]


def data_order(run_dir: Path) -> dict[int, list[str]]:
    """step → row ids of its generation batch; a step re-done after resume overwrites its first try."""
    order: dict[int, list[str]] = {}
    for line in (run_dir / "data_order.jsonl").read_text().splitlines():
        entry = json.loads(line)
        order[entry["step"]] = entry["ids"]
    return order


def checkpoints(run_dir: Path) -> list[int]:
    return sorted(
        int(p.name.split("-")[1])
        for p in run_dir.glob("checkpoint-*")
        if (p / "trainer_state.json").is_file()
    )


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_sigkill_then_restart_continues_from_the_checkpoint(
    tmp_path: Path, fixture_data: Path, tiny_model_dir: Path
) -> None:
    straight = tmp_path / "straight"
    subprocess.run(
        command(straight, tiny_model_dir, fixture_data), check=True, env=env(), capture_output=True
    )

    killed = tmp_path / "killed"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(command(killed, tiny_model_dir, fixture_data), env=env(), stdout=log, stderr=log)
    deadline = time.monotonic() + 240
    while (
        not [c for c in checkpoints(killed) if c >= 4] and proc.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; raise STEPS"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = checkpoints(killed)
    assert at_kill and at_kill[-1] < STEPS
    assert not (killed / "final").exists()

    second = subprocess.run(
        command(killed, tiny_model_dir, fixture_data), env=env(), capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((killed / "run.json").read_text())
    reference = json.loads((straight / "run.json").read_text())
    assert summary["resumed_from"] is not None
    assert summary["resumed_from"].endswith(f"checkpoint-{at_kill[-1]}")
    assert summary["global_step"] == reference["global_step"] == STEPS
    assert data_order(killed) == data_order(straight)
    assert len(data_order(straight)) == STEPS
    # The weights continued from the checkpoint too: same data, same restored RNG, same result.
    a = load_file(killed / "final" / "model.safetensors")
    b = load_file(straight / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-4, worst


@pytest.mark.slow
def test_resume_restores_the_checkpoint_weights(
    tmp_path: Path, fixture_data: Path, tiny_model_dir: Path
) -> None:
    """Without the fix (transformers#43701) a resumed full fine-tune restarts from the base weights."""
    from egovlm.train.config import load_config
    from egovlm.train.trainer import build_trainer

    run = tmp_path / "run"
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", command(run, tiny_model_dir, fixture_data)[6:])
    trainer = build_trainer(cfg, "cpu")
    trainer.train()
    trained = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    fresh = build_trainer(cfg, "cpu")  # base weights
    assert any(not torch.equal(fresh.model.state_dict()[k], v) for k, v in trained.items())
    fresh._load_from_checkpoint(str(run / f"checkpoint-{STEPS}"))
    assert all(torch.equal(fresh.model.state_dict()[k], v) for k, v in trained.items())


def test_only_rank_zero_moves_a_torn_checkpoint_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All ranks look for the checkpoint before the process group exists; two renaming the same
    torn folder would race (the loser crashes). Every rank skips it, rank 0 alone moves it."""
    from egovlm.train.trainer import last_checkpoint

    (tmp_path / "checkpoint-2").mkdir()  # torn: no trainer_state.json
    monkeypatch.setenv("RANK", "1")
    assert last_checkpoint(tmp_path) is None
    assert (tmp_path / "checkpoint-2").is_dir() and not (tmp_path / ".torn-checkpoint-2").exists()
    monkeypatch.setenv("RANK", "0")
    assert last_checkpoint(tmp_path) is None
    assert (tmp_path / ".torn-checkpoint-2").is_dir() and not (tmp_path / "checkpoint-2").exists()
