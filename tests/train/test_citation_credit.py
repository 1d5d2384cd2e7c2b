"""Citation credit (``rollouts.citation_credit: keyframe``): the ``<keyframes>`` block's tokens take the
keyframe reward's own group advantage and every other token that of the other rewards
(egovlm.train.rollouts.split_advantages / citation_token_mask, wired in the trainer)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from egovlm.train.config import ConfigError, load_config
from egovlm.train.rollouts import CREDITED_METRIC, citation_token_mask, drop_completions, split_advantages

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "models" / "egovlm-mini"
RECIPE = REPO / "configs" / "tiny_cpu.yaml"
NAN = float("nan")


def by_hand(values: torch.Tensor, group: int) -> torch.Tensor:
    """Group advantage as TRL's sum_then_normalize computes it, NaN rows left out and given 0."""
    out = torch.zeros_like(values)
    for g in range(0, len(values), group):
        part = values[g : g + group]
        live = ~torch.isnan(part)
        if live.sum() >= 2:
            mean, std = part[live].mean(), part[live].std()
            out[g : g + group][live] = (part[live] - mean) / (std + 1e-4)
    return out


def test_answer_and_citation_advantages_are_each_rewards_own() -> None:
    # columns: format, accuracy, keyframe; two groups of four rollouts
    rewards = torch.tensor(
        [
            [1.0, 1.0, 0.9],
            [1.0, 1.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.5, 0.0, 0.0],
            [1.0, 1.0, NAN],  # the keyframe reward cannot measure this question (None)
            [1.0, 0.0, NAN],
            [1.0, 0.0, NAN],
            [1.0, 1.0, NAN],
        ]
    )
    weights = torch.tensor([0.25, 1.0, 0.5])
    answer, cite = split_advantages(rewards, weights, 2, 4, "group")
    assert torch.allclose(answer, by_hand(0.25 * rewards[:, 0] + rewards[:, 1], 4), atol=1e-6)
    assert torch.allclose(cite, 0.5 * by_hand(rewards[:, 2], 4), atol=1e-6)
    assert cite[0] > 0 > cite[1] and torch.all(cite[4:] == 0)
    # the answer's advantage does not see the keyframe reward: rollouts 0 and 1 differ only there
    assert answer[0] == answer[1]
    # a group whose keyframe rewards are equal gives its citations nothing
    same = rewards.clone()
    same[:4, 2] = 0.3
    assert torch.all(split_advantages(same, weights, 2, 4, "group")[1][:4].abs() < 1e-6)
    # no scaling: plain differences from the group mean
    _, raw = split_advantages(rewards, weights, 2, 4, "none")
    assert torch.allclose(raw[:4], 0.5 * (rewards[:4, 2] - rewards[:4, 2].mean()))
    with pytest.raises(ValueError, match="scale_rewards must be"):
        split_advantages(rewards, weights, 2, 4, "row")


def tokenize(tok: Any, text: str, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids + [0] * pad]), torch.tensor([[1] * len(ids) + [0] * pad])


def credited(tok: Any, text: str, pad: int = 0) -> str:
    ids, live = tokenize(tok, text, pad)
    mask = citation_token_mask(tok, ids, live)[0]
    assert not mask[ids.shape[1] - pad :].any(), "padding is never credited"
    return tok.decode(ids[0][mask].tolist())


@pytest.mark.parametrize(
    ("text", "body"),
    [
        ("<think></think>\n<keyframes>2, 5</keyframes>\n<answer>C</answer>", "2, 5</keyframes>"),
        ("<think></think><keyframes>7</keyframes><answer>the yellow banana</answer>", "7</keyframes>"),
        ("<THINK></THINK>\n<Keyframes>3,4</KEYFRAMES>\n<answer>B</answer>", "3,4</KEYFRAMES>"),
        ("<think>x</think>\n<answer>C</answer>", ""),  # no block: nothing credited
        ("<think></think>\n<keyframes>2, 5\n<answer>C</answer>", ""),  # never closed
    ],
)
def test_the_citation_tokens_of_the_mini_tokenizer(text: str, body: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MINI)
    assert credited(tok, text, pad=3) == body


class CharTokenizer:
    """One token per character: the tags are many tokens each."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids)


def test_tags_split_into_many_tokens() -> None:
    tok = CharTokenizer()
    text = "<think></think><keyframes>12, 3</keyframes><answer>A</answer>"
    assert credited(tok, text, pad=2) == "12, 3</keyframes>"


def test_dropped_groups_lose_their_per_token_advantages() -> None:
    output = {
        "completion_mask": torch.ones(4, 3),
        "advantages": torch.arange(12, dtype=torch.float32).view(4, 3) + 1,
    }
    drop_completions(output, torch.tensor([False, True, False, True]), lambda x: x)
    assert torch.all(output["advantages"][[1, 3]] == 0) and torch.all(output["advantages"][[0, 2]] > 0)
    assert float(output["num_items_in_batch"]) == 6


def test_config_checks(tmp_path: Path) -> None:
    base = [f"run.output_dir={tmp_path}", "grpo.per_device_train_batch_size=8", "grpo.num_generations=4"]
    assert load_config(RECIPE, base).rollouts.citation_credit == "shared"
    with pytest.raises(ConfigError, match="citation_credit must be shared or keyframe"):
        load_config(RECIPE, [*base, "rollouts.citation_credit=tokens"])
    with pytest.raises(ConfigError, match="rewards.weights.keyframe = 0 switches off"):
        load_config(RECIPE, [*base, "rollouts.citation_credit=keyframe", "rewards.weights.keyframe=0"])
    with pytest.raises(ConfigError, match="sum_then_normalize"):
        load_config(
            RECIPE,
            [
                *base,
                "rollouts.citation_credit=keyframe",
                "grpo.multi_objective_aggregation=normalize_then_sum",
            ],
        )


def test_a_real_grpo_step_credits_the_citation_tokens_by_the_keyframe_reward(
    tmp_path: Path, fixture_data: Path
) -> None:
    """The published mini model, its real rewards, citations explored so that the keyframe reward
    varies within groups: every citation token carries the keyframe reward's group advantage and
    every other live token the advantage of format + accuracy, as computed here by hand from the
    step's rewards; the citation tokens are found here from the decoded text, independently."""
    from egovlm.train.trainer import build_trainer

    cfg = load_config(
        RECIPE,
        [
            f"run.output_dir={tmp_path / 'run'}",
            f"model.path={MINI}",
            f"data.train={fixture_data}",
            "data.frames=8",
            "grpo.max_steps=1",
            "grpo.save_strategy=no",
            "grpo.per_device_train_batch_size=16",
            "grpo.num_generations=8",
            "grpo.max_completion_length=48",
            "grpo.learning_rate=1e-9",
            "grpo.temperature=0.8",
            "run.plot=false",
            "rollouts.explore_citations=1.0",
            "rollouts.citation_credit=keyframe",
        ],
    )
    trainer = build_trainer(cfg, "cpu")
    seen: list[tuple[dict[str, Any], torch.Tensor]] = []
    original = trainer._generate_and_score_completions

    def capture(inputs: Any) -> Any:
        out = original(inputs)
        seen.append((out, trainer._scored_rewards.clone()))
        return out

    trainer._generate_and_score_completions = capture
    trainer.train()
    assert seen
    names, weights = trainer.reward_func_names, trainer.reward_weights
    k = names.index("keyframe")
    tok = trainer.processing_class.tokenizer
    varied = 0
    for out, rewards in seen:
        adv, ids, live = out["advantages"], out["completion_ids"], out["completion_mask"]
        assert adv.shape == ids.shape
        others = [j for j in range(len(names)) if j != k]
        answer = by_hand((rewards[:, others] * weights[others]).sum(dim=1), 8)
        cite = weights[k] * by_hand(rewards[:, k], 8)
        for i in range(ids.shape[0]):
            pieces = [tok.decode([t]) for t in ids[i][live[i].bool()].tolist()]
            text = "".join(pieces)
            block = re.search(r"<keyframes>(.*?</keyframes>)", text)
            assert block, f"the explored mini model always cites: {text!r}"
            at = 0
            for j, piece in enumerate(pieces):
                inside = at < block.end(1) and at + len(piece) > block.start(1)
                want = cite[i] if inside else answer[i]
                assert abs(float(adv[i, j]) - float(want)) < 1e-4, (i, j, piece, text)
                at += len(piece)
            varied += int(abs(float(cite[i]) - float(answer[i])) > 1e-3)
    assert varied >= 4, "precondition: citation and answer advantages differ on several rollouts"
    logged = [e[CREDITED_METRIC] for e in trainer.state.log_history if CREDITED_METRIC in e]
    assert logged and logged[0] >= 2.0  # at least a number and the closing tag per completion
