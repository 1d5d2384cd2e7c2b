"""GRPO training throughput on the tiny model: steps/s, samples/s, generation vs optimisation.

A short run of ``configs/tiny_cpu.yaml`` (few steps, no checkpoints, into a temp folder) through
``egovlm.train``'s own ``build_trainer``, so what is measured is the recipe users run. Per step:

* ``step_s`` — wall time between ``on_step_begin`` and ``on_step_end`` (a TrainerCallback);
* ``generate_s`` — time inside TRL's ``_generate`` (rollouts: ``num_generations`` completions per
  prompt), measured by wrapping that method on the trainer instance;
* ``score_s`` — the rest of ``_generate_and_score_completions`` (rewards, old/ref log-probs);
* ``optimise_s`` — ``step_s`` minus both: loss forward/backward and the optimiser step.

The first step is a warm-up and is excluded from the medians (it pays for lazy initialisation).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from egovlm import paths
from egovlm.benchmarks.report import Report

RECIPE = paths.CONFIGS_DIR / "tiny_cpu.yaml"


class StepTimer:
    """Wall time per optimiser step plus the time spent in the wrapped generation calls.

    ``clock`` is the time source in seconds (``time.perf_counter``; tests pass a fake one)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.steps: list[dict[str, float]] = []
        self._t0 = 0.0
        self._gen = 0.0
        self._gen_score = 0.0

    def wrap(self, trainer: Any) -> None:
        """Time ``trainer._generate`` and ``trainer._generate_and_score_completions`` (TRL's rollout
        and rollout + reward scoring) by shadowing them on the instance."""
        gen, gen_score = trainer._generate, trainer._generate_and_score_completions

        def timed_gen(*a: Any, **kw: Any) -> Any:
            t0 = self.clock()
            try:
                return gen(*a, **kw)
            finally:
                self._gen += self.clock() - t0

        def timed_gen_score(*a: Any, **kw: Any) -> Any:
            t0 = self.clock()
            try:
                return gen_score(*a, **kw)
            finally:
                self._gen_score += self.clock() - t0

        trainer._generate = timed_gen
        trainer._generate_and_score_completions = timed_gen_score

    def callback(self) -> Any:
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                timer._t0 = timer.clock()
                timer._gen = timer._gen_score = 0.0

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                step = timer.clock() - timer._t0
                timer.steps.append(
                    {
                        "step_s": step,
                        "generate_s": timer._gen,
                        "score_s": timer._gen_score - timer._gen,
                        "optimise_s": step - timer._gen_score,
                    }
                )

        return _Callback()


def _config(tmp: Path, steps: int, extra: list[str]) -> Any:
    from egovlm.train.config import load_config

    overrides = [
        f"run.output_dir={tmp / 'run'}",
        "run.resume=false",
        "run.plot=false",
        f"model.path={tmp / 'model'}",
        f"data.train={tmp / 'data' / 'qa.jsonl'}",
        f"grpo.max_steps={steps}",
        f"grpo.save_steps={steps * 10}",
        "grpo.report_to=[]",
        *extra,
    ]
    return load_config(RECIPE, overrides)


def run(out: Path, steps: int = 6, quick: bool = False, overrides: list[str] | None = None) -> Report:
    """Train ``steps`` GRPO steps of the tiny recipe (3 when ``quick``), write ``out/train.*``."""
    import torch

    from egovlm.train.trainer import build_trainer

    steps = 3 if quick else steps
    torch.set_num_threads(1)
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="egovlm-bench-train-") as tmp:
        cfg = _config(Path(tmp), steps + 1, overrides or [])
        t_setup = time.perf_counter()
        trainer = build_trainer(cfg, device="cpu", callbacks=[timer.callback()])
        setup_s = time.perf_counter() - t_setup
        timer.wrap(trainer)
        load_before = os.getloadavg()
        trainer.train()
        load_after = os.getloadavg()
        batch = int(trainer.args.per_device_train_batch_size) * int(trainer.args.gradient_accumulation_steps)
        gens = int(cfg.grpo["num_generations"])
        trl_times = [float(e["step_time"]) for e in trainer.state.log_history if "step_time" in e]
    report = Report(
        "train",
        params={
            "recipe": str(RECIPE.name),
            "steps_timed": steps,
            "warmup_steps": 1,
            "samples_per_step": batch,
            "num_generations": gens,
            "max_completion_length": cfg.grpo["max_completion_length"],
            "torch_threads": 1,
            "setup_s": round(setup_s, 2),
            "loadavg_before": list(load_before),
            "loadavg_after": list(load_after),
        },
    )
    report.rows = [{"step": i + 1, **s} for i, s in enumerate(timer.steps)]
    report.summary = summarise(timer.steps[1:], batch)
    if report.summary and len(trl_times) > 1:  # TRL's own per-step timer, as a cross-check
        report.summary[0]["trl_step_time_median"] = statistics.median(trl_times[1:])
    report.notes += [
        "step 1 is a warm-up, excluded from the summary medians.",
        f"samples = completions: {batch} per step ({batch // gens} prompts x {gens} generations).",
        "generate_s: TRL GRPOTrainer._generate (rollouts); score_s: rewards and log-probs;"
        " optimise_s: the rest of the step (loss, backward, optimiser).",
        f"torch threads 1; load average before/after {load_before[0]:.1f}/{load_after[0]:.1f}.",
    ]
    report.write(out)
    from egovlm.benchmarks.plots import write_plots

    write_plots(report, out)
    return report


def summarise(steps: list[dict[str, float]], samples_per_step: int) -> list[dict[str, Any]]:
    """Medians per step and the throughput they imply."""
    if not steps:
        return []
    med = {k: statistics.median(s[k] for s in steps) for k in steps[0]}
    return [
        {
            "steps_per_s": 1.0 / med["step_s"],
            "samples_per_s": samples_per_step / med["step_s"],
            "step_s_median": med["step_s"],
            "generate_s_median": med["generate_s"],
            "score_s_median": med["score_s"],
            "optimise_s_median": med["optimise_s"],
            "generate_fraction": med["generate_s"] / med["step_s"],
        }
    ]
