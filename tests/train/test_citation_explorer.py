"""Exploration of the cited frames in GRPO rollouts (egovlm.train.rollouts.CitationExplorer): the
mixture it samples from, where it applies and where it must not, and the trainer's real rollouts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from egovlm.train.config import load_config
from egovlm.train.rollouts import EXPLORED_METRIC, CitationExplorer

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "models" / "egovlm-mini"
T = 0.8


class CharTokenizer:
    """One token per character: tags are many tokens, and no ``" 5"`` token exists."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


PROMPT = ids("<user>")


def sampled(explorer: CitationExplorer, generated: str, scores: torch.Tensor) -> torch.Tensor:
    """The distribution ``generate`` samples from after this processor and its temperature warper."""
    explorer.prompt_len = len(PROMPT)
    out = explorer(torch.tensor([PROMPT + ids(generated)]), scores.clone())
    return torch.softmax(out / T, dim=-1)


def peaked(rows: int, top: str, vocab: int = 128) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(rows, vocab, generator=gen)
    scores[:, ord(top)] = 12.0
    return scores


def test_a_frame_number_is_drawn_uniformly_with_probability_epsilon() -> None:
    """Inside ``<keyframes>``, where the policy's top token is a frame number, the sampled
    distribution is exactly ``(1 - eps) p + eps uniform(1..n)``; frames above n get nothing extra."""
    eps, n = 0.3, 4
    explorer = CitationExplorer(CharTokenizer(), [n], eps, temperature=T)
    for generated in ("<keyframes>", "<keyframes>2, "):  # the first citation and a later one
        scores = peaked(1, "1")
        p = torch.softmax(scores[0] / T, dim=-1)
        q = sampled(explorer, generated, scores)[0]
        want = (1 - eps) * p
        want[[ord(str(k)) for k in range(1, n + 1)]] += eps / n
        assert torch.allclose(q, want, atol=1e-6), generated
        assert q[ord("7")] == pytest.approx(float((1 - eps) * p[ord("7")]), abs=1e-7)
        assert float(q.sum()) == pytest.approx(1.0, abs=1e-5)
    assert explorer.explored == 2


@pytest.mark.parametrize(
    "generated, top",
    [
        ("<think>", "1"),  # no block open yet
        ("<keyframes>3</keyframes>\n<answer>", "1"),  # the block is closed: the answer is the policy's
        ("<keyframes>1", "2"),  # the second digit of a number (12) is the policy's
        ("<keyframes>1", ","),  # the policy's choice to go on or stop
        ("<keyframes>1, 2", "<"),  # closing the block
    ],
)
def test_nothing_else_is_touched(generated: str, top: str) -> None:
    explorer = CitationExplorer(CharTokenizer(), [8], 0.5, temperature=T)
    scores = peaked(1, top)
    rows = torch.tensor([PROMPT + ids(generated)])
    explorer.prompt_len = len(PROMPT)
    assert torch.equal(explorer(rows, scores.clone()), scores)
    assert explorer.explored == 0


def test_epsilon_zero_and_bad_arguments() -> None:
    scores = peaked(1, "1")
    off = CitationExplorer(CharTokenizer(), [8], 0.0, temperature=T, prompt_len=len(PROMPT))
    assert torch.equal(off(torch.tensor([PROMPT + ids("<keyframes>")]), scores.clone()), scores)
    for eps in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"in \[0, 1\]"):
            CitationExplorer(CharTokenizer(), [8], eps)
    with pytest.raises(ValueError, match="temperature"):
        CitationExplorer(CharTokenizer(), [8], 0.5, temperature=0.0)
    with pytest.raises(ValueError, match="3 rows generated for 2 prompts"):
        CitationExplorer(CharTokenizer(), [8, 8], 0.5)(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 8))


def test_a_bpe_with_spaced_numbers_keeps_the_policys_spelling() -> None:
    """The mini model's tokenizer has ``"5"`` and ``" 5"`` as single tokens: after ``2,`` the
    draw is among the spaced frame numbers, so the citation reads ``2, 7`` and never ``2,7``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MINI)
    one = {k: tok(str(k), add_special_tokens=False)["input_ids"] for k in range(1, 9)}
    spaced = {k: tok(f" {k}", add_special_tokens=False)["input_ids"] for k in range(1, 9)}
    assert all(len(v) == 1 for v in [*one.values(), *spaced.values()]), "precondition: one token each"
    explorer = CitationExplorer(tok, [8], 1.0, temperature=T)
    prompt = tok("<user>", add_special_tokens=False)["input_ids"]
    generated = tok("<think></think>\n<keyframes>2,", add_special_tokens=False)["input_ids"]
    explorer.prompt_len = len(prompt)
    scores = torch.zeros(1, len(tok))
    scores[0, spaced[5][0]] = 20.0
    q = torch.softmax(explorer(torch.tensor([prompt + generated]), scores) / T, dim=-1)[0]
    assert torch.allclose(q[[v[0] for v in spaced.values()]], torch.full((8,), 1 / 8), atol=1e-6)
    assert float(q[[v[0] for v in one.values()]].sum()) < 1e-6


class Citations:
    """A reward that keeps each rollout's cited frames (the first number of its keyframes block)."""

    __name__ = "citations"

    def __init__(self) -> None:
        self.cited: list[list[int]] = []
        self.groups: list[str] = []
        self.explored: list[float] = []  # the trainer's logged explored citations per completion

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        for c, qid in zip(completions, columns["id"], strict=True):
            text = c if isinstance(c, str) else c[-1]["content"]
            block = re.search(r"<keyframes>(.*?)</keyframes>", str(text), re.S)
            self.cited.append([int(x) for x in re.findall(r"\d+", block.group(1))] if block else [])
            self.groups.append(str(qid))
        return [0.0] * len(completions)


def cited(tmp_path: Path, data: Path, eps: float) -> Citations:
    from egovlm.train.trainer import build_trainer

    cfg = load_config(
        REPO / "configs" / "tiny_cpu.yaml",
        [
            f"run.output_dir={tmp_path / str(eps)}",
            f"model.path={MINI}",
            f"data.train={data}",
            "data.frames=8",
            "grpo.max_steps=2",
            "grpo.save_strategy=no",
            "grpo.per_device_train_batch_size=16",
            "grpo.num_generations=8",
            "grpo.max_completion_length=48",
            "grpo.learning_rate=1e-9",
            f"grpo.temperature={T}",
            "run.plot=false",
            f"rollouts.explore_citations={eps}",
        ],
    )
    probe = Citations()
    trainer = build_trainer(cfg, "cpu", rewards=([probe], [1.0]))
    trainer.train()
    probe.explored = [e[EXPLORED_METRIC] for e in trainer.state.log_history if EXPLORED_METRIC in e]
    return probe


def test_grpo_rollouts_explore_the_cited_frames(tmp_path: Path, fixture_data: Path) -> None:
    """The trained mini model cites few distinct frames per group of 8 rollouts; with
    ``rollouts.explore_citations: 1`` every citation is a uniform frame in 1..8 and groups spread."""

    def spread(probe: Citations) -> float:
        groups: dict[str, set[int]] = {}
        for qid, frames in zip(probe.groups, probe.cited, strict=True):
            groups.setdefault(qid, set()).update(frames[:1])
        return sum(len(v) for v in groups.values()) / len(groups)

    own = cited(tmp_path, fixture_data, 0.0)
    explored = cited(tmp_path, fixture_data, 1.0)
    assert len(explored.cited) == len(own.cited) == 32
    assert all(c and all(1 <= f <= 8 for f in c) for c in explored.cited)  # still a citation, in range
    assert spread(own) <= 3.0, "precondition: the mini model's citations are habits"
    assert spread(explored) >= 4.0
    # logged per step: with epsilon 1 every completion's citation positions are explored (one or more)
    assert own.explored == [] and len(explored.explored) == 2 and min(explored.explored) >= 1.0
