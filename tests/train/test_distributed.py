"""Two-process GRPO on CPU (gloo) through ``accelerate launch``, killed after a checkpoint and
relaunched: both ranks ran, each trained on its own share of the rows, and both end with the
same (trained) weights.

The launch is the user's: ``egovlm data prepare`` first, then
``accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m egovlm.cli train …``.
The model is the trained mini checkpoint shipped in models/egovlm-mini: its completions earn
rewards that differ within a group, so the gradients are non-zero and differ between ranks (a
random-init model earns all-zero rewards, hence zero gradients, and identical weights would
prove nothing)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "egovlm-mini"
STEPS = 4
PER_RANK = 4  # completions per rank and step = one prompt x num_generations


def overrides(run: Path, data: Path, *extra: str) -> list[str]:
    return [
        f"run.output_dir={run}",
        f"model.path={MODEL}",
        f"data.train={data}",
        f"grpo.max_steps={STEPS}",
        "grpo.save_steps=2",
        "grpo.save_total_limit=10",
        f"grpo.per_device_train_batch_size={PER_RANK}",
        f"grpo.num_generations={PER_RANK}",
        "grpo.max_completion_length=32",
        "rollouts.shuffle_options=true",  # each rank's option orders are gathered with its row ids
        "run.plot=false",
        *extra,
    ]


def launch(run: Path, data: Path, *extra: str) -> list[str]:
    accelerate = str(Path(sys.executable).parent / "accelerate")
    config = REPO / "configs" / "accelerate" / "cpu_2proc.yaml"
    recipe = REPO / "configs" / "tiny_cpu.yaml"
    train = ["-m", "egovlm.cli", "train", "--config", str(recipe)]
    return [accelerate, "launch", "--config_file", str(config), *train, *overrides(run, data, *extra)]


def env() -> dict[str, str]:
    # One thread per rank: two ranks on two cores, without oversubscribing them.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def complete_checkpoints(run: Path) -> list[int]:
    return sorted(
        int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
    )


def kill_launch(pid: int) -> None:
    """SIGKILL the launcher and every process under it, as a crash or a preemption would. Killing
    the launcher's process group is not enough: torchrun starts each rank in a session of its own,
    and an orphaned rank trains on (and writes checkpoints) after its launcher died."""
    import psutil

    launcher = psutil.Process(pid)
    ranks = launcher.children(recursive=True)
    for proc in [launcher, *ranks]:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(ranks, timeout=30)


@pytest.mark.slow
def test_two_cpu_processes_train_split_data_resume_and_agree(fixture_data: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    data = tmp_path / "data" / "qa.jsonl"
    shutil.copytree(fixture_data.parent, data.parent)
    run = tmp_path / "run"
    prepare = [sys.executable, "-m", "egovlm.cli", "data", "prepare", "--config"]
    prepare += [str(REPO / "configs" / "tiny_cpu.yaml"), *overrides(run, data), "--workers", "2"]
    subprocess.run(prepare, check=True, env=env(), capture_output=True, cwd=tmp_path)

    # First launch: killed (the launcher and both ranks, one process group) after checkpoint-2.
    log1 = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        launch(run, data),
        env=env(),
        stdout=log1,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not complete_checkpoints(run) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, (
        "the first launch ended before a checkpoint: " + (tmp_path / "first.log").read_text()[-3000:]
    )
    kill_launch(first.pid)
    first.wait()
    at_kill = complete_checkpoints(run)
    assert at_kill and at_kill[-1] < STEPS and not (run / "final").exists()
    first_log = (tmp_path / "first.log").read_text()
    assert "rank 0 of 2" in first_log and "rank 1 of 2" in first_log

    # Same command again: both ranks resume from the checkpoint and finish.
    second = subprocess.run(launch(run, data), env=env(), capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    summary = json.loads((run / "run.json").read_text())
    assert summary["world_size"] == 2
    assert summary["global_step"] == STEPS
    assert summary["resumed_from"].endswith(f"checkpoint-{at_kill[-1]}")

    ranks = [json.loads((run / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert {(r["world_size"], r["distributed_type"], r["backend"], r["global_step"]) for r in ranks} == {
        (2, "MULTI_CPU", "gloo", STEPS)
    }
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert ranks[0]["params_sha256"] == ranks[1]["params_sha256"]  # the replicas agree
    trained, base = load_file(run / "final" / "model.safetensors"), load_file(MODEL / "model.safetensors")
    assert any(not trained[k].equal(base[k]) for k in trained)  # ... and they did train

    # Each step's rows were split: one prompt (x num_generations) per rank, different prompts.
    steps: dict[int, list[list[str]]] = {}
    for line in (run / "data_order.jsonl").read_text().splitlines():
        entry = json.loads(line)
        steps[entry["step"]] = entry["ranks"]  # a step redone after the resume replaces its first try
        assert len(entry["orders"]) == len(entry["ids"]) == 2 * PER_RANK
        assert all(o is None or sorted(o) == sorted("ABCDE"[: len(o)]) for o in entry["orders"])
    assert sorted(steps) == list(range(STEPS))
    for share in steps.values():
        assert [len(s) for s in share] == [PER_RANK, PER_RANK]
        assert len(set(share[0])) == len(set(share[1])) == 1 and set(share[0]) != set(share[1])
    # Three steps of two prompts are one epoch of the six rows: every row once, none twice.
    epoch = [rows[0] for s in range(3) for rows in steps[s]]
    assert sorted(epoch) == sorted(f"fx{i:02d}" for i in range(6))


def logged(output: str, metric: str) -> list[float]:
    """Every logged value of ``metric`` in a run's console output (TRL prints its log dicts)."""
    return [float(x) for x in re.findall(rf"'{metric}': '([0-9.]+)'", output)]


def train_two_ranks(fixture_data: Path, tmp_path: Path, *extra: str) -> str:
    """Prepare the fixture and train STEPS steps on two CPU processes with two questions per rank
    and step (the validator wants several per generation batch), logging every step; asserts the
    run finished and both replicas hold the same weights. Returns the console output."""
    data = tmp_path / "data" / "qa.jsonl"
    shutil.copytree(fixture_data.parent, data.parent)
    run = tmp_path / "run"
    extra = (
        *extra,
        f"grpo.per_device_train_batch_size={2 * PER_RANK}",
        "grpo.logging_steps=1",
        "grpo.save_strategy=no",
    )
    prepare = [sys.executable, "-m", "egovlm.cli", "data", "prepare", "--config"]
    prepare += [str(REPO / "configs" / "tiny_cpu.yaml"), *overrides(run, data, *extra), "--workers", "2"]
    subprocess.run(prepare, check=True, env=env(), capture_output=True, cwd=tmp_path)
    done = subprocess.run(launch(run, data, *extra), env=env(), capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((run / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["params_sha256"] == ranks[1]["params_sha256"]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_two_cpu_processes_with_dropped_groups_forward_as_many_rows(
    fixture_data: Path, tmp_path: Path
) -> None:
    """With uniform groups dropped, the processes can keep different numbers of rows with a loss
    token; each forwards as many rows as the one keeping most (TRL gathers per-row metrics across
    them), the run finishes and the replicas agree."""
    output = train_two_ranks(fixture_data, tmp_path, "rollouts.drop_uniform_groups=true")
    fractions = logged(output, "uniform_group_fraction")
    assert len(fractions) == STEPS
    assert any(0 < f < 1 for f in fractions)  # steps where some rows were left out of the loss


@pytest.mark.slow
def test_two_cpu_processes_credit_each_ranks_citations(fixture_data: Path, tmp_path: Path) -> None:
    """``rollouts.citation_credit: keyframe`` with two processes: each cuts its rows out of the
    advantages computed over both (without the cut the shapes do not match and the run fails), the
    run finishes, the replicas agree and credited citation tokens are logged every step. Which rows a
    rank takes is TRL's process slice, checked on one process by test_citation_credit.py."""
    output = train_two_ranks(
        fixture_data,
        tmp_path,
        "rollouts.citation_credit=keyframe",
        "rollouts.explore_citations=1.0",  # citations differ within groups, so the keyframe advantage is not 0
    )
    credited = logged(output, "credited_citation_tokens")
    assert len(credited) == STEPS and min(credited) > 0  # every step credited citation tokens on both ranks
