"""``make repro-mini``: the miniature EgoVLM experiment end to end, on CPU, with the project's commands.

Stages (each prints the exact command it runs; a stage whose output exists is skipped,
so an interrupted run continues; ``--fresh`` deletes ``--runs`` first):

1. data      EgoSynth: RL clips (train split, seed 0), val (val split, seed 0; the base's
             hyper-parameters and the published model are chosen on it; the GRPO rate and steps
             were chosen on a larger val set, seed 7, 120 clips: docs/mini_experiment/LOG.md), test
             (test split, seed 0), and with ``--train-base`` or ``--stage base``
             the pre-training clips (train split, seed 1);
             the RL files (:func:`write_grpo_data`) ``rl_train/grpo.jsonl``: the RL clips' questions of
             the GRPO types only (multiple-choice and open), held out of the base stage, and
             ``rl_train/mixed.jsonl``: those and half as many base-type rows; the test
             file ``test/eval.jsonl``: the test clips' multiple-choice and open questions together
2. base      the committed base model (``--base``, models/egovlm-mini-base) copied in; it was made by
             ``--stage base`` (``make repro-base``), which runs
             ``python -m experiments.mini pretrain --config experiments/mini/configs/<X>.yaml`` for
             X = base_1frame (vision labels, then single-frame hand/visible/place questions), then base
             from its model on 8-frame prompts (base-type questions, answer-only targets in the
             exact eval prompt; experiments/mini/base_data.py), then base_varied from that (questions
             in other words, options in other styles, statement questions), then base_anneal (the
             same mix drawn afresh, at a lower rate); never the GRPO types
3. GRPO      ``egovlm train --config experiments/mini/configs/grpo_{a,b}.yaml`` x seeds 0, 1, 2, on
             the RL file the recipe's ``data.train`` names (``mixed.jsonl``)
4. eval      ``egovlm eval`` of the base and the six GRPO models on the test split's multiple-choice and
             open questions (one eval per model: ``test/eval.jsonl``), once more on its multiple-choice
             questions with another clip's frames (what the text alone is worth), and on the val split's
             multiple-choice questions (to choose the demo's model); of the base also on its own
             (base-type) questions about the val clips (does it answer what it was trained on?). Every
             eval fits the positional keyframe baseline on the arms' RL file (``--keyframe-prior-data``),
             as the keyframe reward does
5. report    ``python -m experiments.mini.report``: docs/mini_experiment/results.md (with the
             significance tests of experiments/mini/stats.py), results.json, curves.png
6. publish   among the base and the six GRPO models, the best one on *val* multiple-choice accuracy
             (never the test split's) whose accuracy is significantly above chance after a Bonferroni
             correction for the seven candidates is copied to ``models/egovlm-mini`` with a model card;
             none is published if none is significant (``--no-publish`` skips this stage)

``--stage base`` runs only what the base model needs (its data: the pre-training and val clips; the
base stage), records its wall time and saves the model to ``--base`` (``make repro-base``).

Jobs (GRPO runs, evals) run ``--jobs`` at a time with ``OMP_NUM_THREADS=--threads``: on the 2-core
machine two one-thread jobs finish sooner than one two-thread job after another, and a one-thread
job degrades far less when other work shares the cores. Wall time and load average of every
stage go to ``<runs>/timings.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the repository root: the commands run there
EGOVLM = str(ROOT / ".venv" / "bin" / "egovlm")
PYTHON = sys.executable
PRETRAIN = [PYTHON, "-m", "experiments.mini", "pretrain"]  # the base stage (experiments/mini/cli.py)
SEEDS = (0, 1, 2)
ARMS = ("a", "b")
LOOK = ["--size", "224x168", "--fps", "10", "--duration", "16"]  # resized to 112x84 keyframes anyway
# folder -> (split, base seed, clips)
DATA = {
    "pretrain": ("train", 1, 400),
    "rl_train": ("train", 0, 80),
    "val": ("val", 0, 40),
    "test": ("test", 0, 60),
}
BASE_DATA = ("pretrain", "val")  # what the base stage reads
BASE_QA = "base_qa.jsonl"  # in the val folder (write_base_qa)
GRPO_QA = "grpo.jsonl"  # in the rl_train folder: the GRPO types only (write_grpo_data)
MIXED_QA = "mixed.jsonl"  # in the rl_train folder: the GRPO types + some base types (write_grpo_data)
RL_FILES = (GRPO_QA, MIXED_QA)  # what a GRPO recipe's data.train may name
ARM_CONFIG = "experiments/mini/configs/grpo_{}.yaml"  # the recipe of arm a / b
BASE_SHARE = 0.5  # mixed.jsonl: base-type rows per GRPO-type row (a third of every batch on average)
TEST_QA = "eval.jsonl"  # in the test folder: qa.jsonl + open.jsonl (write_test_qa)
OPEN_QA = "open.jsonl"  # EgoSynth's open-form questions beside qa.jsonl
EVAL = ["--frames", "8", "--batch-size", "8", "--max-new-tokens", "64", "--device", "cpu"]


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").is_file() else 0.0


def run(cmd: list[str], threads: int, log: Path | None = None) -> None:
    """Run one command (printed first); its output goes to ``log`` when given."""
    print("$ " + shlex.join(cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    if log is None:
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        done = subprocess.run(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"command failed ({done.returncode}), see {log}: {shlex.join(cmd)}")


CODE = "code.json"  # in --runs: the commit the run's code came from (the model card names it)


def write_code_version(path: Path) -> None:
    """Record the commit this run's code came from, whether tracked files differed from it, and the
    machine: CPU, cores and the vector ISA torch dispatches its CPU kernels to (AVX2 vs AVX-512
    kernels round differently, so the same seeds can give different floats on another machine)."""
    import torch

    from egovlm.benchmarks.report import machine_info

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no")
    info: dict[str, Any] = {"commit": commit, "local_changes": bool(changes) if commit else None}
    machine = machine_info()
    info["machine"] = {
        "cpu": machine["cpu"],
        "cores": machine["cores"],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    path.write_text(json.dumps(info) + "\n")


def stage(runs: Path, name: str, body: Callable[[], None]) -> None:
    """Time a stage and record it with the machine's load average before and after."""
    t0, l0 = time.perf_counter(), load1()
    body()
    seconds, l1 = round(time.perf_counter() - t0, 1), load1()
    row = {"stage": name, "seconds": seconds, "load_start": l0, "load_end": l1}
    with (runs / "timings.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"== {name}: {seconds / 60:.1f} min (load {l0:.1f} -> {l1:.1f})", flush=True)


def parallel(jobs: list[Callable[[], None]], n: int) -> None:
    with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
        for f in [pool.submit(j) for j in jobs]:
            f.result()


def make_data(runs: Path, names: tuple[str, ...] = tuple(DATA)) -> None:
    for name in names:
        split, seed, clips = DATA[name]
        out = runs / "data" / name
        if not (out / "qa.jsonl").is_file():
            cmd = [EGOVLM, "data", "synth", "--out", str(out), "--clips", str(clips), "--seed", str(seed)]
            run([*cmd, "--split", split, *LOOK, "--workers", "2"], threads=1)
    if "rl_train" in names:
        write_grpo_data(runs / "data" / "rl_train")
    if "test" in names:
        write_otherclip(runs / "data" / "test" / "qa.jsonl", runs / "data" / "test" / "qa_otherclip.jsonl")
        write_test_qa(runs / "data" / "test")
    if "val" in names:
        write_base_qa(runs / "data" / "val")


def write_base_qa(folder: Path) -> None:
    """The base stage's own question types (MC and open) about the val clips, as QA rows: the base
    model's accuracy on them says whether it answers what it was trained on."""
    from egovlm.schema import write_jsonl
    from experiments.mini.base_data import base_qa

    if not (folder / BASE_QA).is_file():
        write_jsonl(folder / BASE_QA, base_qa(folder, frames=8, seed=0))


def write_grpo_data(folder: Path) -> Path:
    """``<folder>/grpo.jsonl``: the folder's multiple-choice (``qa.jsonl``) and open (``open.jsonl``)
    questions whose type is a GRPO type (:data:`experiments.mini.base_data.GRPO_TYPES`), held out of
    the base stage, so what GRPO gains there is not the base's training data coming back; and
    ``<folder>/mixed.jsonl``: those rows and, drawn evenly from the rest, :data:`BASE_SHARE` as many
    base-type rows (the RL clips' first pick-up, count and overall questions), shuffled, so that GRPO
    keeps paying for the base types while it learns the held-out ones (without them the base types
    fell 6-11 points in the first full run). Returns the GRPO-types file."""
    from egovlm.schema import read_jsonl, write_jsonl
    from experiments.mini.base_data import GRPO_TYPES

    out, mixed = folder / GRPO_QA, folder / MIXED_QA
    if out.is_file() and mixed.is_file():
        return out  # written once: a resumed run trains on the same rows
    items = [
        i for name in ("qa.jsonl", OPEN_QA) if (folder / name).is_file() for i in read_jsonl(folder / name)
    ]
    grpo = [i for i in items if i.question_type in GRPO_TYPES]
    if not out.is_file():
        write_jsonl(out, grpo)
    if not mixed.is_file():
        rest = [i for i in items if i.question_type not in GRPO_TYPES]
        rng = np.random.default_rng(0)
        keep = sorted(rng.permutation(len(rest))[: int(BASE_SHARE * len(grpo))])
        rows = grpo + [rest[int(k)] for k in keep]
        write_jsonl(mixed, [rows[int(k)] for k in rng.permutation(len(rows))])
    return out


def rl_file(config: str) -> str:
    """The RL file a GRPO recipe trains on: its ``data.train`` file name, one of :data:`RL_FILES`
    (repro writes both and points the recipe at the run's copy)."""
    import yaml

    name = Path(str(yaml.safe_load((ROOT / config).read_text())["data"]["train"])).name
    if name not in RL_FILES:
        raise SystemExit(f"{config}: data.train names {name!r}; repro writes {', '.join(RL_FILES)}")
    return name


def write_test_qa(folder: Path) -> Path:
    """``<folder>/eval.jsonl``: the multiple-choice and the open questions in one file, so one eval
    per model scores both (eval reports them side by side, never pooled; open ids end ``-open``)."""
    from egovlm.schema import read_jsonl, write_jsonl

    out = folder / TEST_QA
    if not out.is_file():
        write_jsonl(
            out,
            [
                i
                for name in ("qa.jsonl", OPEN_QA)
                if (folder / name).is_file()
                for i in read_jsonl(folder / name)
            ],
        )
    return out


def prepare_rl_frames(runs: Path) -> None:
    """``egovlm data prepare`` for the GRPO arms (training never decodes): once per frame spec, after
    the base stage (the keyframe size is read from its final checkpoint)."""
    for arm in ARMS:
        cfg = ARM_CONFIG.format(arm)
        cmd = [EGOVLM, "data", "prepare", "--config", cfg]
        cmd += [
            f"model.path={runs / 'pretrain' / 'final'}",
            f"data.train={runs / 'data' / 'rl_train' / rl_file(cfg)}",
        ]
        run([*cmd, f"data.cache_dir={runs / 'frame_cache'}", "--workers", "2"], 1)


def write_otherclip(src: Path, dst: Path) -> None:
    """The test questions, each pointing at the next clip's video (same folder, so paths stay valid):
    accuracy on it is what a model gets without the right frames."""
    from egovlm.schema import read_jsonl, write_jsonl

    items = read_jsonl(src)
    videos = list(dict.fromkeys(i.video for i in items if i.video))
    shift = {v: videos[(k + 1) % len(videos)] for k, v in enumerate(videos)}
    write_jsonl(dst, [i.model_copy(update={"video": shift[i.video]}) if i.video else i for i in items])


# the base stage's phases, in order: (run folder under --runs, config); each continues from the
# previous one's final/ (the first builds the model), the last one's final/ is the base model
BASE_PHASES = (
    ("base_1frame", "experiments/mini/configs/base_1frame.yaml"),
    ("base_8frame", "experiments/mini/configs/base.yaml"),
    ("base_varied", "experiments/mini/configs/base_varied.yaml"),
    ("pretrain", "experiments/mini/configs/base_anneal.yaml"),
)


def first_pending_phase(runs: Path) -> int:
    """Index of the first base phase still to run: the one after the latest phase whose final/ exists
    (an interrupted stage resumes there; earlier phases' models need not be kept)."""
    done = [
        k for k, (folder, _) in enumerate(BASE_PHASES) if (runs / folder / "final" / "config.json").is_file()
    ]
    return max(done) + 1 if done else 0


def base_phases_label(runs: Path) -> str:
    first, n = first_pending_phase(runs), len(BASE_PHASES)
    return f"base stage ({n} phases)" if first == 0 else f"base stage (phases {first + 1}-{n} of {n})"


def base_stage(runs: Path) -> None:
    """Phase 1 on single frames from random init, phase 2 on 8-frame prompts, phase 3 with questions
    in other words and statement options, phase 4 the same at a lower rate; from the first pending one."""
    data = [f"data.train={runs / 'data' / 'pretrain'}", f"data.val={runs / 'data' / 'val'}"]
    first = first_pending_phase(runs)
    for k in range(first, len(BASE_PHASES)):
        folder, config = BASE_PHASES[k]
        start = [f"model.init_from={runs / BASE_PHASES[k - 1][0] / 'final'}"] if k else []
        cfg = ["--config", config, f"run.output_dir={runs / folder}"]
        run([*PRETRAIN, *cfg, *data, *start], 2)


def grpo_job(runs: Path, arm: str, seed: int, threads: int) -> Callable[[], None]:
    out = runs / f"grpo_{arm}" / f"seed{seed}"

    def job() -> None:
        if (out / "final" / "config.json").is_file():
            return
        cfg = ARM_CONFIG.format(arm)
        paths = [
            f"run.output_dir={out}",
            f"model.path={runs / 'pretrain' / 'final'}",
            f"data.train={runs / 'data' / 'rl_train' / rl_file(cfg)}",
            f"data.cache_dir={runs / 'frame_cache'}",
        ]
        run([EGOVLM, "train", "--config", cfg, *paths, f"grpo.seed={seed}"], threads, out / "train.log")

    return job


def eval_job(
    runs: Path, name: str, model: Path, threads: int, other: bool, split: str = "test", rows: str = TEST_QA
) -> Callable[[], None]:
    data = runs / "data" / split / ("qa_otherclip.jsonl" if other else rows)
    folder = "eval" if split == "test" else f"eval_{split}"
    out = runs / folder / (f"{name}-otherclip" if other else name)

    def job() -> None:
        if (out / "metrics.json").is_file():
            return
        cmd = [EGOVLM, "eval", "--model", str(model), "--data", str(data), "--out", str(out), *EVAL]
        cmd += ["--cache-dir", str(runs / "eval_frames")]  # each frame set decoded once, not once per eval
        # the reward's prior: fitted on the file the arms train on (both arms name the same one)
        cmd += ["--keyframe-prior-data", str(runs / "data" / "rl_train" / rl_file(ARM_CONFIG.format("a")))]
        run(cmd, threads, out / "eval.log")

    return job


def record_total(runs: Path, t0: float, l0: float) -> None:
    total = {
        "stage": "total",
        "seconds": round(time.perf_counter() - t0, 1),
        "load_start": l0,
        "load_end": load1(),
    }
    with (runs / "timings.jsonl").open("a") as f:
        f.write(json.dumps(total) + "\n")


TRAINING = "training"  # in the saved base: <phase folder>/{run.json, config.yaml, log.jsonl}
PHASE_RECORDS = ("run.json", "config.yaml", "log.jsonl")


def save_base(runs: Path, dest: Path) -> None:
    """Copy the base stage's final model to ``dest`` (committed: the GRPO experiment starts from
    it), with the commit and wall time that made it (``base.json``) and each phase's records
    (``training/``); written beside ``dest`` and swapped in only when complete."""
    from egovlm.atomic import staged_dir
    from experiments.mini.publish import copy_model

    with staged_dir(dest) as tmp:
        size = copy_model(runs / "pretrain" / "final", tmp)
        for folder, _ in BASE_PHASES:  # the phases' records: the report's base-stage table reads them
            for name in PHASE_RECORDS:
                if (runs / folder / name).is_file():
                    (tmp / TRAINING / folder).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(runs / folder / name, tmp / TRAINING / folder / name)
        timings = [json.loads(line) for line in (runs / "timings.jsonl").read_text().splitlines() if line]
        made = {"made_by": json.loads((runs / CODE).read_text()), "timings": timings, "bytes": size}
        (tmp / "base.json").write_text(json.dumps(made, indent=2) + "\n", encoding="utf-8")
    print(f"base model saved to {dest}, {size / 1e6:.1f} MB", flush=True)


def use_base(runs: Path, base: Path) -> None:
    """Start the GRPO experiment from the committed base model: the model and its phases' records
    copied to where the base stage would have written them, so every later stage reads one path."""
    if not (base / "model.safetensors").is_file():
        raise SystemExit(f"{base}: no base model (model.safetensors); `make repro-base` trains it")
    from experiments.mini.publish import copy_model

    final = runs / "pretrain" / "final"
    if not (final / "config.json").is_file():
        final.mkdir(parents=True, exist_ok=True)
        copy_model(base, final)
        for record in sorted((base / TRAINING).glob("*/*")):
            (runs / record.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(record, runs / record.parent.name / record.name)


def main() -> None:
    ap = argparse.ArgumentParser(description="Miniature EgoVLM experiment (see module docstring).")
    ap.add_argument("--runs", type=Path, default=Path("runs/mini"))
    ap.add_argument("--docs", type=Path, default=Path("docs/mini_experiment"))
    ap.add_argument("--jobs", type=int, default=2, help="GRPO runs / evals at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job")
    ap.add_argument("--fresh", action="store_true", help="delete --runs first (a full, timed run)")
    ap.add_argument("--models", type=Path, default=Path("models/egovlm-mini"), help="where to publish")
    ap.add_argument("--no-publish", action="store_true", help="do not replace --models")
    ap.add_argument(
        "--stage", choices=("all", "base"), default="all", help="base: only the base model's data and stage"
    )
    ap.add_argument(
        "--base",
        type=Path,
        default=Path("models/egovlm-mini-base"),
        help="the committed base model: GRPO starts from it (--stage all); --stage base writes it",
    )
    ap.add_argument("--train-base", action="store_true", help="--stage all: train the base instead of --base")
    args = ap.parse_args()
    runs = (ROOT / args.runs).resolve() if not args.runs.is_absolute() else args.runs
    if args.fresh and runs.exists():
        shutil.rmtree(runs)
    runs.mkdir(parents=True, exist_ok=True)
    write_code_version(runs / CODE)
    t0, l0 = time.perf_counter(), load1()
    base = runs / "pretrain" / "final"
    if args.stage == "base":
        stage(runs, "data (EgoSynth, base + val)", lambda: make_data(runs, BASE_DATA))
        stage(runs, base_phases_label(runs), lambda: base_stage(runs))
        record_total(runs, t0, l0)
        save_base(runs, ROOT / args.base)
        return
    if args.train_base:
        stage(runs, "data (EgoSynth, 4 splits)", lambda: make_data(runs))
        stage(runs, base_phases_label(runs), lambda: base_stage(runs))
    else:
        use_base(runs, ROOT / args.base)
        stage(runs, "data (EgoSynth, RL + val + test)", lambda: make_data(runs, ("rl_train", "val", "test")))
    stage(runs, "prepare (RL frame sets)", lambda: prepare_rl_frames(runs))
    grpo = [grpo_job(runs, arm, s, args.threads) for arm in ARMS for s in SEEDS]
    stage(runs, f"GRPO ({len(grpo)} runs, {args.jobs} at a time)", lambda: parallel(grpo, args.jobs))
    models = {
        "base": base,
        **{f"grpo_{a}-seed{s}": runs / f"grpo_{a}" / f"seed{s}" / "final" for a in ARMS for s in SEEDS},
    }
    evals = [eval_job(runs, n, m, args.threads, other) for n, m in models.items() for other in (False, True)]
    evals += [eval_job(runs, n, m, args.threads, False, "val", "qa.jsonl") for n, m in models.items()]
    evals.append(eval_job(runs, "base-perception", base, args.threads, False, "val", BASE_QA))
    stage(runs, f"eval ({len(evals)} evals, {args.jobs} at a time)", lambda: parallel(evals, args.jobs))
    report = [PYTHON, "-m", "experiments.mini.report", "--runs", str(runs), "--out", str(args.docs)]
    record_total(runs, t0, l0)
    run(report, 1)
    if not args.no_publish:
        publish = [PYTHON, "-m", "experiments.mini.publish", "--runs", str(runs), "--out", str(args.models)]
        run([*publish, "--results", str(args.docs / "results.json")], 1)


if __name__ == "__main__":
    main()
