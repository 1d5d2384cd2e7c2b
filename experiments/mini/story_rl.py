"""GRPO on the clip's story: the `events` description sampled and rewarded by how well it places the
clip's true events.

The base's `events` descriptions (every pick-up and put-down with its nearest frame) tell the story a
keyframe citation needs, and their shortfall is the story: events missed, written outside the two
frames around them, or invented (docs/mini_experiment/LOG.md, "Story or motion"). The best of eight
sampled descriptions places far more events right than the greedy one ("RL on the story"), so the
story is within the base's pass@k: what GRPO sharpens. The reward is verifiable from EgoSynth's ground
truth: each true event scores 1 written at its nearest frame and ``state_credit`` at the other frame of
its bracket (:func:`experiments.mini.events_probe.placement`), and the sum S is an F-beta against the
true and the written events, ``(1 + b^2) S / (b^2 true + written)`` (beta > 1 weights missed events
over invented ones).

The rows are clips of a base-stage EgoSynth folder (``data.train`` of the recipe names the folder),
each as ``--sets`` frame sets of ``data.frames`` (the first uniform, the others jittered), prompted as
the base stage prompts the `events` task. GRPO is egovlm's trainer
(:func:`egovlm.train.trainer.build_trainer`) with these rows and this reward in place of the recipe's;
a development phase, in no committed recipe.

    python -m experiments.mini story --config experiments/mini/configs/story_rl.yaml \\
        model.path=models/egovlm-mini-base run.output_dir=runs/story_rl

Measure the result with ``python -m experiments.mini.events_probe --questions`` on clips it never saw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.mini.events_probe import event_brackets, placement

Brackets = dict[tuple[str, str, int], tuple[int, frozenset[int]]]


def brackets_column(brackets: Brackets) -> str:
    """A clip's true events with their nearest frame and bracket, as a JSON string for a dataset column."""
    return json.dumps([[a, o, k, near, sorted(around)] for (a, o, k), (near, around) in brackets.items()])


def read_brackets(column: str) -> Brackets:
    """The inverse of :func:`brackets_column`."""
    return {(a, o, int(k)): (int(near), frozenset(around)) for a, o, k, near, around in json.loads(column)}


@dataclass
class StoryReward:
    """The story reward (module docstring): a plain callable as TRL calls rewards, reading each row's
    ``brackets`` column."""

    state_credit: float = 0.5
    beta: float = 1.0
    __name__ = "story"  # TRL names the reward's logged metrics after it

    def __post_init__(self) -> None:
        if not 0.0 <= self.state_credit <= 1.0:
            raise ValueError(f"state_credit must be in [0, 1], got {self.state_credit}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")

    def score(self, brackets: Brackets, text: str) -> float:
        p = placement(brackets, text)
        written = p["right"] + p["other_of_bracket"] + p["outside_bracket"] + p["extra"]
        s = p["right"] + self.state_credit * p["other_of_bracket"]
        b2 = self.beta * self.beta
        return (1 + b2) * s / max(1.0, b2 * len(brackets) + written)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        from egovlm.train.rewards import completion_text

        return [
            self.score(read_brackets(b), completion_text(c))
            for c, b in zip(completions, columns["brackets"], strict=True)
        ]


def story_rows(
    folder: Path, frames: int, size: tuple[int, int], sets: int, clips: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """One training row per clip and frame set: the `events` prompt, its frames (in memory) and the
    clip's ``brackets`` at those frames. A clip's jittered sets depend on ``seed`` and its position only."""
    from experiments.mini.pretrain_data import Example, decode_frame_sets, load_truth

    rows = []
    for i, clip in enumerate(load_truth(folder)[:clips]):
        for k, shown in enumerate(
            decode_frame_sets(clip, frames, sets, size, np.random.default_rng([seed, i]))
        ):
            rows.append(
                {
                    "id": f"{clip.clip_id}-set{k}",
                    "prompt": Example(clip.clip_id, [("events", "events")], shown, "").prompt(),
                    "images": [f.pil() for f in shown],
                    "brackets": brackets_column(event_brackets(clip, [f.timestamp_s for f in shown])),
                }
            )
    return rows


def train_story(
    cfg: Any, reward: StoryReward, sets: int = 2, clips: int | None = None, seed: int = 0
) -> Path:
    """GRPO on the story rows of ``cfg.data.train`` (an EgoSynth folder), on the CPU like every stage of
    the miniature; resumes from the run's last checkpoint. Returns the final model's folder."""
    from egovlm.models.files import keyframe_size_of
    from egovlm.train.dataset import hf_dataset
    from egovlm.train.trainer import build_trainer, ensure_model, last_checkpoint, save_final

    folder = Path(cfg.data.train)
    rows = story_rows(folder, cfg.data.frames, keyframe_size_of(ensure_model(cfg)), sets, clips, seed)
    trainer = build_trainer(cfg, "cpu", rewards=([reward], [1.0]), dataset=hf_dataset(rows))
    run_dir = Path(cfg.run.output_dir)
    trainer.train(resume_from_checkpoint=last_checkpoint(run_dir) if cfg.run.resume else None)
    return save_final(trainer, run_dir)
