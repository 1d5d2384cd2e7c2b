"""GRPO on the story (experiments.mini.story_rl): the reward against each clip's true events, the rows,
and two real steps of egovlm's trainer from the committed base on EgoSynth clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experiments.mini.events_probe import event_brackets, placed_events, placement
from experiments.mini.pretrain_data import decode_frame_sets, describe, load_truth
from experiments.mini.story_rl import StoryReward, brackets_column, read_brackets, story_rows

REPO = Path(__file__).resolve().parents[3]
BASE = REPO / "models" / "egovlm-mini-base"


def _clip_and_times(folder: Path) -> tuple[Any, list[Any], list[float]]:
    clip = load_truth(folder)[0]
    shown = decode_frame_sets(clip, 8, 1, (112, 84), np.random.default_rng(0))[0]
    return clip, shown, [f.timestamp_s for f in shown]


def test_the_reward_pays_the_true_story_and_charges_what_is_wrong(synth_slice: Path) -> None:
    clip, shown, times = _clip_and_times(synth_slice)
    brackets = event_brackets(clip, times)
    assert read_brackets(brackets_column(brackets)) == brackets
    truth = describe(clip, shown, "events")
    lines = truth.splitlines()
    assert len(lines) >= 2, "the clip needs two events"
    reward = StoryReward()
    assert reward.score(brackets, truth) == pytest.approx(1.0)
    assert reward.score(brackets, "") == 0.0
    # every event at its first frame after: right where that is nearest, half credit where it is the
    # other frame of the bracket
    after = placed_events(clip, times, "after")
    p = placement(brackets, after)
    assert p["other_of_bracket"] > 0 and p["missed"] == p["extra"] == 0
    expected = 2 * (p["right"] + 0.5 * p["other_of_bracket"]) / (2 * len(brackets))
    assert reward.score(brackets, after) == pytest.approx(expected)
    assert StoryReward(state_credit=0.0).score(brackets, after) < reward.score(brackets, after) < 1.0
    # one event dropped (the last line: the others keep their occurrence), or one invented (an object
    # the clip has not): F-beta of the n true events, beta < 1 charges the invented one more, beta > 1
    # the missed one
    dropped = "\n".join(lines[:-1])
    invented = truth + "\nAt 15.5 s the left hand puts the zebra mug down on the shelf (frame 8)."
    n = len(brackets)
    for beta in (0.5, 1.0, 2.0):
        b2, r = beta * beta, StoryReward(beta=beta)
        assert r.score(brackets, dropped) == pytest.approx((1 + b2) * (n - 1) / (b2 * n + n - 1))
        assert r.score(brackets, invented) == pytest.approx((1 + b2) * n / (b2 * n + n + 1))
    assert StoryReward(beta=0.5).score(brackets, invented) < StoryReward(beta=0.5).score(brackets, dropped)
    assert StoryReward(beta=2.0).score(brackets, dropped) < StoryReward(beta=2.0).score(brackets, invented)
    with pytest.raises(ValueError, match="state_credit"):
        StoryReward(state_credit=1.5)
    with pytest.raises(ValueError, match="beta"):
        StoryReward(beta=0.0)
    # as TRL calls it: conversational completions, the brackets column per row
    done = reward(
        [None, None],
        [[{"role": "assistant", "content": truth}], dropped],
        brackets=[brackets_column(brackets)] * 2,
    )
    assert done[0] == pytest.approx(1.0) and done[1] == pytest.approx(reward.score(brackets, dropped))


def test_rows_carry_each_frame_sets_true_events(synth_slice: Path) -> None:
    rows = story_rows(synth_slice, 8, (112, 84), sets=2, clips=2, seed=3)
    assert [r["id"] for r in rows] == [
        f"{c.clip_id}-set{k}" for c in load_truth(synth_slice)[:2] for k in (0, 1)
    ]
    again = story_rows(synth_slice, 8, (112, 84), sets=2, clips=1, seed=3)
    assert [r["brackets"] for r in again] == [
        r["brackets"] for r in rows[:2]
    ]  # a clip's sets: seed and position
    for r in rows:
        assert len(r["images"]) == 8 and r["images"][0].size == (112, 84)
        user = r["prompt"][-1]["content"]
        assert sum(part["type"] == "image" for part in user) == 8
    clip = load_truth(synth_slice)[0]
    uniform = decode_frame_sets(clip, 8, 1, (112, 84), np.random.default_rng(0))[0]
    assert read_brackets(rows[0]["brackets"]) == event_brackets(clip, [f.timestamp_s for f in uniform])
    assert rows[0]["brackets"] != rows[1]["brackets"]  # the jittered set has other frame times


class RecordingReward(StoryReward):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, float]] = []

    def __call__(self, prompts: Any, completions: Any, **columns: Any) -> list[float]:
        from egovlm.train.rewards import completion_text

        out = super().__call__(prompts, completions, **columns)
        self.seen += [(completion_text(c), r) for c, r in zip(completions, out, strict=True)]
        return out


@pytest.mark.skipif(not (BASE / "config.json").is_file(), reason="the committed base model is not present")
def test_two_steps_from_the_base_score_its_descriptions(synth_slice: Path, tmp_path: Path) -> None:
    from egovlm.train.config import load_config
    from experiments.mini.story_rl import train_story

    cfg = load_config(
        REPO / "experiments" / "mini" / "configs" / "story_rl.yaml",
        [
            f"run.output_dir={tmp_path / 'run'}",
            f"model.path={BASE}",
            f"data.train={synth_slice}",
            "grpo.max_steps=2",
            "grpo.per_device_train_batch_size=8",
            "grpo.num_generations=4",
            "grpo.save_strategy=no",
        ],
    )
    reward = RecordingReward()
    final = train_story(cfg, reward, sets=1, clips=2)
    assert (final / "model.safetensors").is_file()
    assert len(reward.seen) == 2 * 8  # two steps of two clips x four descriptions
    # the base writes event sentences, which the reward scores against the truth: some pay, not all alike
    assert any("picks up the" in text for text, _ in reward.seen)
    assert any(r > 0 for _, r in reward.seen) and len({r for _, r in reward.seen}) > 1


def test_the_storys_pass_at_k_ranks_samples_by_the_reward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``events_probe.sampled_stories``: a clip's samples are scored by the story reward and by their
    derived citations; ``best`` is the derived F1 of the sample the reward ranks first."""
    from egovlm.frames import Frame
    from egovlm.schema import read_jsonl
    from egovlm.synth.generate import SynthConfig, synthesize
    from egovlm.video import uniform_times
    from experiments.mini.events_probe import citation_f1_sum, sampled_stories, scoreable

    synthesize(tmp_path, 4, 3, "test", SynthConfig(size=(160, 120), fps=5, duration=16.0))
    clips = {c.clip_id: c for c in load_truth(tmp_path)}
    questions = read_jsonl(tmp_path / "qa.jsonl")
    reward = StoryReward()
    per_clip, story, derived, total = [], np.zeros(3), np.zeros(4), 0
    for c in clips.values():
        times = uniform_times(c.duration_s, 8)
        frames = [Frame(i + 1, t, np.zeros((4, 4, 3), np.uint8)) for i, t in enumerate(times)]
        truth = describe(c, frames, "events")
        after = placed_events(c, times, "after")
        dropped = "\n".join(truth.splitlines()[1:])  # the first event missed
        samples = [dropped, truth, ""]
        per_clip.append({"clip_id": c.clip_id, "times": times, "written": after, "samples": samples})
        brackets = event_brackets(c, times)
        scored = scoreable([q for q in questions if q.meta["clip_id"] == c.clip_id], times)
        total += len(scored)
        stories = [reward.score(brackets, t) for t in samples]
        sums = [citation_f1_sum(scored, t) for t in samples]
        assert stories[1] == pytest.approx(1.0) and stories[2] == 0.0 and max(stories) == stories[1]
        story += [reward.score(brackets, after), sum(stories) / 3, stories[1]]
        derived += [citation_f1_sum(scored, after), sum(sums) / 3, sums[1], max(sums)]
    got = sampled_stories(questions, per_clip, clips)
    assert [got["story"][k] for k in ("greedy", "mean", "best")] == pytest.approx(list(story / len(clips)))
    keys = ("greedy", "mean", "best", "best_derived")
    assert [got["derived"][k] for k in keys] == pytest.approx(list(derived / total))
    # the true story is the best sample, and its citations score above the first-frame-after placement
    assert got["story"]["best"] == pytest.approx(1.0) and got["story"]["greedy"] < 1.0
    assert got["derived"]["best"] > got["derived"]["greedy"]
    # ``best`` follows the reward's ranking, not the citations': a reward that prefers the shortest
    # sample picks the empty one, whose citations score nothing
    monkeypatch.setattr(StoryReward, "score", lambda self, brackets, text: -len(text))
    shortest = sampled_stories(questions, per_clip, clips)
    assert (
        shortest["derived"]["best"] == 0.0
        and shortest["derived"]["best_derived"] == got["derived"]["best_derived"]
    )
