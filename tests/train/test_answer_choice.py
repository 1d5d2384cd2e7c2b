"""Answers restricted to the options (egovlm.choice): the token rule, the logits processor, and the
rule in the paths that generate: eval and GRPO's rollouts, with a trained model that writes answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from egovlm.choice import AnswerChoice, AnswerChoiceProcessor, answer_bodies
from egovlm.contract import parse_answer
from egovlm.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "models" / "egovlm-mini"
OPTIONS = {"A": "The cup was picked up first.", "B": "The book was picked up first.", "C": "Neither."}


class CharTokenizer:
    """One token per character: ``<answer>`` is eight tokens, as in tokenizers without tag tokens."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_the_rule_follows_the_answer_block_only() -> None:
    rule = AnswerChoice(CharTokenizer(), OPTIONS)
    assert rule.allowed(ids("<think></think>\n<keyframes>1")) is None  # before <answer>: free
    assert rule.allowed(ids("<keyframes>1</keyframes>\n<answer>")) == sorted(ids("TNABC"))  # no "the ..."
    assert rule.allowed(ids("<answer>The ")) == sorted(ids("cb"))
    assert rule.allowed(ids("<answer>The b")) == ids("o")
    assert rule.allowed(ids("<answer>B")) == ids("<")  # the letter, then </answer>
    assert rule.allowed(ids("<answer>Neither.</answer")) == ids(">")
    assert rule.allowed(ids("<answer>Neither")) == sorted(ids(".<"))  # a sentence without its period
    assert rule.allowed(ids("<answer>Neither.</answer>")) is None  # done: free again
    assert rule.allowed(ids("<answer>Nope")) is None  # written before the rule applied: left alone
    # a phrase with its article swapped or dropped; a sentence with or without its period; text that
    # normalises like another option's is no answer; a form that is a letter would be read as one
    phrases = answer_bodies({"A": " a red cup ", "B": "B", "C": "Blue book.", "D": "the blue book"})
    assert phrases == ["a red cup", "red cup", "the red cup", "The red cup", "the B", "The B", *"ABCD"]
    assert answer_bodies({"A": "On the shelf.", "B": "2"}) == [
        "On the shelf.", "On the shelf", "2", "the 2", "The 2", "A", "B"
    ]  # fmt: skip
    for options in ({"A": " a red cup ", "B": "B", "C": "Blue book.", "D": "the blue book"}, OPTIONS):
        for body in answer_bodies(options):
            assert parse_answer(f"<answer>{body}</answer>", None, options).answer, body
    with pytest.raises(ValueError, match="options"):
        AnswerChoice(CharTokenizer(), {})


@pytest.mark.parametrize("seed", range(5))
def test_any_logits_end_in_one_option(seed: int) -> None:
    """Whatever the scores, a restricted row writes exactly one option's text or letter; a free row
    (an open question) is left as it was."""
    gen = torch.Generator().manual_seed(seed)
    prompt = ids("<system>")
    rows = [prompt + ids("<answer>"), prompt + ids("<answer>")]
    rule = AnswerChoiceProcessor([AnswerChoice(CharTokenizer(), OPTIONS), None], prompt_len=len(prompt))
    free_changed = False
    for _ in range(40):
        scores = torch.randn(2, 128, generator=gen)
        before = scores[1].clone()
        out = rule(torch.tensor(rows), scores.clone())
        free_changed |= not torch.equal(out[1], before)
        for r in range(2):
            rows[r].append(int(out[r].argmax()))
        if rows[0][-9:] == ids("</answer>"):
            break
    text = "".join(chr(i) for i in rows[0][len(prompt) :])
    assert text.removesuffix("</answer>").removeprefix("<answer>") in answer_bodies(OPTIONS), text
    assert parse_answer(f"<think></think>\n<keyframes>1</keyframes>\n{text}", None, OPTIONS).answer
    assert not free_changed


def test_numpy_logits_keep_only_the_allowed_tokens() -> None:
    """The device's decode loops (ONNX, TensorRT) restrict numpy logits with the same rule."""
    import numpy as np

    rule = AnswerChoice(CharTokenizer(), OPTIONS)
    logits = np.arange(128, dtype=np.float32)
    out = rule.restrict(ids("<answer>The "), logits)
    assert np.isfinite(out).sum() == 2 and int(out.argmax()) == ord("c")
    assert out[ord("b")] == logits[ord("b")]
    assert rule.restrict(ids("<think>"), logits) is logits  # outside the answer: untouched


def test_rows_and_prompts_must_agree() -> None:
    rule = AnswerChoiceProcessor([None, None], prompt_len=1, num_return_sequences=2)
    with pytest.raises(ValueError, match="3 rows generated for 2 prompts x 2"):
        rule(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 8))


class Recorder:
    """A reward that keeps every rollout's completion with its row's options."""

    __name__ = "recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        for c, letters, texts in zip(completions, columns["letters"], columns["option_texts"], strict=True):
            text = c if isinstance(c, str) else c[-1]["content"]
            self.seen.append((str(text), dict(zip(letters, texts, strict=True))))
        return [0.0] * len(completions)


def rollouts(tmp_path: Path, data: Path, answers: str) -> list[tuple[str, dict[str, str]]]:
    from egovlm.train.trainer import build_trainer

    cfg = load_config(
        REPO / "configs" / "tiny_cpu.yaml",
        [
            f"run.output_dir={tmp_path / answers}",
            f"model.path={MINI}",
            f"data.train={data}",
            "data.frames=8",
            "grpo.max_steps=1",
            "grpo.save_strategy=no",
            "grpo.per_device_train_batch_size=8",
            "grpo.num_generations=4",
            "grpo.max_completion_length=48",
            "grpo.learning_rate=1e-9",
            "run.plot=false",
            f"rollouts.answers={answers}",
        ],
    )
    recorder = Recorder()
    trainer = build_trainer(cfg, "cpu", rewards=([recorder], [1.0]))
    trainer.train()
    return recorder.seen


def test_grpo_rollouts_answer_with_an_option(tmp_path: Path, fixture_data: Path) -> None:
    """The trained mini model, free, writes some answers that are no option of the fixture's
    questions; with ``rollouts.answers: options`` every answer it writes is one."""

    def answered(seen: list[tuple[str, dict[str, str]]]) -> list[bool]:
        out = []
        for text, options in seen:
            if "<answer>" in text and "</answer>" in text:
                out.append(parse_answer(text, None, options).answer is not None)
        return out

    free = answered(rollouts(tmp_path, fixture_data, "free"))
    assert free and not all(free), "precondition: free rollouts write non-option answers"
    restricted = answered(rollouts(tmp_path, fixture_data, "options"))
    assert restricted and all(restricted)
