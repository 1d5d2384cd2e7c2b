"""What skipping the masked rows buys a GRPO step of the miniature recipe, measured side by side.

    python -m experiments.mini.bench_steps --runs runs/mini7 [--model models/egovlm-mini-base] \
        [--config experiments/mini/configs/grpo_b.yaml] [--steps 20] --out bench/mini_steps

Two processes at the same time, one thread each (as ``make repro-mini`` runs its GRPO jobs), the same
recipe, seed and data: ``skipped`` is the trainer as shipped (rows whose loss mask is empty are left
out of the loss's forward and backward, :mod:`egovlm.train.rollouts`); ``forwarded`` is TRL's own
loss over every row (the skip switched off by emptying ``ROW_FREE_LOSSES`` in that process). Per
arm: each step's wall time and time in TRL's ``_generate`` / scoring / the rest (loss, backward,
optimiser), via :class:`egovlm.benchmarks.train.StepTimer`; medians over the steps after the first,
their ratio, and how far apart the two arms' logged losses are (float summation order only: the
skip is exact).
Writes ``OUT/mini_steps.json`` / ``.md`` (:class:`egovlm.benchmarks.report.Report`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ARMS = ("skipped", "forwarded")


def run_arm(arm: str, args: argparse.Namespace) -> None:
    """One arm in this process: train ``args.steps`` steps, write ``OUT/<arm>.json``."""
    import torch

    from egovlm.benchmarks.train import StepTimer
    from egovlm.train import rollouts
    from egovlm.train.config import load_config
    from egovlm.train.trainer import build_trainer

    torch.set_num_threads(1)
    if arm == "forwarded":
        rollouts.ROW_FREE_LOSSES = frozenset()  # the trainer reads it at each loss: TRL's loss as is
    out = Path(args.out)
    cfg = load_config(
        Path(args.config),
        [
            f"run.output_dir={out / arm}",
            "run.resume=false",
            "run.plot=false",
            f"model.path={args.model}",
            f"data.train={Path(args.runs) / 'data' / 'rl_train' / 'mixed.jsonl'}",
            f"data.cache_dir={Path(args.runs) / 'frame_cache'}",
            f"grpo.max_steps={args.steps}",
            f"grpo.save_steps={args.steps * 10}",
            "grpo.seed=0",
        ],
    )
    timer = StepTimer()
    trainer = build_trainer(cfg, device="cpu", callbacks=[timer.callback()])
    timer.wrap(trainer)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    (out / f"{arm}.json").write_text(json.dumps({"steps": timer.steps, "losses": losses}))


def summarise(results: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per arm the median of each timing over the steps after the first (rows), and the ratios
    forwarded / skipped with how far apart the two arms' logged losses are (summary)."""
    medians: dict[str, dict[str, float]] = {}
    for arm in ARMS:
        steps: list[dict[str, float]] = results[arm]["steps"][1:]
        if not steps:
            raise ValueError(f"arm {arm!r} timed no step after the warm-up: give --steps 2 or more")
        medians[arm] = {k: statistics.median(s[k] for s in steps) for k in steps[0]}
    pairs = list(zip(results["skipped"]["losses"], results["forwarded"]["losses"], strict=True))
    summary = {
        "step_s_forwarded": medians["forwarded"]["step_s"],
        "step_s_skipped": medians["skipped"]["step_s"],
        "speedup": medians["forwarded"]["step_s"] / medians["skipped"]["step_s"],
        "optimise_speedup": medians["forwarded"]["optimise_s"] / medians["skipped"]["optimise_s"],
        "logged_losses": len(pairs),
        # float summation order only: the skip is exact
        "loss_max_rel_diff": max((abs(a - b) / max(abs(b), 1e-12) for a, b in pairs), default=None),
    }
    return [{"arm": arm, **medians[arm]} for arm in ARMS], [summary]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="a repro-mini run folder (its data/ and frame_cache/)")
    ap.add_argument("--model", default="models/egovlm-mini-base")
    ap.add_argument("--config", default="experiments/mini/configs/grpo_b.yaml")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="bench/mini_steps")
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # the child processes
    args = ap.parse_args(argv)
    if args.arm:
        run_arm(args.arm, args)
        return 0

    from egovlm.benchmarks.report import Report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    me = [sys.executable, "-m", "experiments.mini.bench_steps", *(argv or sys.argv[1:])]
    children = [subprocess.Popen([*me, "--arm", a], env=env) for a in ARMS]
    if any(c.wait() != 0 for c in children):
        print("an arm failed; see its output above", file=sys.stderr)
        return 1
    results = {a: json.loads((out / f"{a}.json").read_text()) for a in ARMS}
    report = Report(
        "mini_steps",
        params={
            "config": args.config,
            "model": args.model,
            "runs": args.runs,
            "steps": args.steps,
            "warmup_steps": 1,
            "torch_threads": 1,
            "wall_s": round(time.perf_counter() - t0, 1),
            "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg()),
        },
    )
    report.rows, report.summary = summarise(results)
    report.notes.append(
        "both arms ran at the same time, one thread each; medians over steps 2..N; optimise_s = loss forward,"
        " backward and optimiser step (where the skip acts)."
    )
    report.write(out)
    print(json.dumps(report.summary[0], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
