"""Text-only lookup drills: the base stage's stand-in for arriving with a pre-trained language model.

Qwen2.5-VL starts from the Qwen2.5 LLM, which can already read a lettered list and say which letter
an option has. The offline-built models start from random weights, and without a task that needs it
they do not learn that: after 1350 language steps on frames the nano base model answers one letter
to every multiple-choice question, its own perception questions included
(docs/mini_experiment/LOG.md, run 3). Binding an option's text to its letter is an in-context skill
that a small decoder learns abruptly, after a few hundred steps of a task that needs it
(``experiments/mini/binding_probe.py``: a nano-shaped decoder goes from 32% to 88% of held-out letters
between steps 250 and 700 of 32). These drills give it that task:

    Question: Which option is the teal mug?
    Options:
    A. the yellow lemon
    ...
    <think>The teal mug.</think>
    <keyframes></keyframes>
    <answer>D</answer>

The question block is the contract's own (:func:`egovlm.contract.question_text`); the options are
EgoSynth object names with the correct one at a uniformly drawn letter, so no letter or position
can be learned. No frames, no clip and nothing about events: the QA's questions never occur.

Two ways to run them: ``text.steps`` on their own before anything else (:func:`train_text`), or
``text.mix_batch`` of them added to every language step of the base stage (:class:`DrillMix`). The
miniature's recipe mixes them in: run first, they bind letters but the model then barely reads its
frames; mixed in from random init, it reads the frames and binds the letters a few hundred steps
later (docs/mini_experiment/LOG.md, runs 4 and 5).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic.dataclasses import dataclass

from egovlm.contract import format_answer, question_text
from egovlm.schema import OPTION_LETTERS
from egovlm.train.config import STRICT
from experiments.mini.vision_aux import object_names

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass(config=STRICT)
class PretrainText:
    """Text-only lookup drills before the vision steps (0 steps: off)."""

    steps: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    answer_weight: float = 10.0  # the option letter's loss weight, as optim.answer_weight
    eval_every: int = 100
    seed: int = 0
    # drills mixed into every language step of the base stage (0: none), their loss added to the
    # frames' at mix_weight: the model learns lists and frames together instead of one after the other
    mix_batch: int = 0
    mix_weight: float = 1.0


def lookup_options(rng: np.random.Generator, names: list[str]) -> tuple[dict[str, str], str]:
    """Five distinct object names as lettered options ("the teal mug") and the asked one's letter,
    drawn uniformly (also used by ``experiments/mini/binding_probe.py``)."""
    picked = [names[int(i)] for i in rng.permutation(len(names))[: len(OPTION_LETTERS)]]
    options = {letter: f"the {name}" for letter, name in zip(OPTION_LETTERS, picked, strict=True)}
    return options, OPTION_LETTERS[int(rng.integers(len(OPTION_LETTERS)))]


def drill_text(rng: np.random.Generator, names: list[str]) -> tuple[str, str, str]:
    """(question block, target, letter) of one drill over five distinct object names."""
    options, letter = lookup_options(rng, names)
    name = options[letter].removeprefix("the ")
    target = format_answer(f"The {name}.", [], letter)
    return question_text(f"Which option is the {name}?", options), target, letter


def encode_drill(tokenizer: Any, question: str, target: str) -> tuple[list[int], list[int], int]:
    """(ids, labels, index of the answer letter): the user turn and the assistant's header have no
    loss; the target (+ end token) has."""
    prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tokenizer(target + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
    answer = tokenizer.convert_tokens_to_ids("<answer>")
    at = len(p_ids) + t_ids.index(answer) + 1
    return p_ids + t_ids, [IGNORE] * len(p_ids) + t_ids, at


def drill_batch(tokenizer: Any, rng: np.random.Generator, n: int, names: list[str]) -> dict[str, Any]:
    """``n`` drills, right-padded: input_ids, attention_mask, labels, answer_at."""
    import torch

    rows = [encode_drill(tokenizer, *drill_text(rng, names)[:2]) for _ in range(n)]
    width = max(len(r[0]) for r in rows)
    pad = tokenizer.pad_token_id or 0
    return {
        "input_ids": torch.tensor([r[0] + [pad] * (width - len(r[0])) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows]),
        "labels": torch.tensor([r[1] + [IGNORE] * (width - len(r[1])) for r in rows]),
        "answer_at": torch.tensor([r[2] for r in rows]),
    }


def drill_loss(model: Any, batch: dict[str, Any], answer_weight: float) -> Any:
    """The drills' next-token loss, the letter weighted ``answer_weight`` (a text-only forward pass:
    the vision tower takes no part)."""
    from experiments.mini.pretrain import weighted_loss

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return weighted_loss(logits, batch["labels"], batch["answer_at"], answer_weight)


def held_out_drills(tokenizer: Any, cfg: PretrainText) -> dict[str, Any]:
    """The 200 fixed drills every accuracy in the logs is measured on (chance 20%)."""
    return drill_batch(tokenizer, np.random.default_rng(10_000 + cfg.seed), 200, object_names())


class DrillMix:
    """Drills mixed into the base stage's language steps (``mix_batch`` per step)."""

    def __init__(self, tokenizer: Any, cfg: PretrainText) -> None:
        self.tokenizer, self.cfg = tokenizer, cfg
        self.rng = np.random.default_rng(20_000 + cfg.seed)  # not the text steps' stream
        self.names = object_names()
        self.held_out = held_out_drills(tokenizer, cfg)

    def loss(self, model: Any) -> Any:
        """This step's drills' loss at ``mix_weight``."""
        batch = drill_batch(self.tokenizer, self.rng, self.cfg.mix_batch, self.names)
        return drill_loss(model, batch, self.cfg.answer_weight) * self.cfg.mix_weight

    def accuracy(self, model: Any) -> float:
        return letter_accuracy(model, self.held_out)


def letter_accuracy(model: Any, batch: dict[str, Any]) -> float:
    """Teacher-forced: how often the argmax at the answer position is the right letter
    (:func:`experiments.mini.pretrain.letter_hits`, the base stage's validation measure)."""
    import torch

    from experiments.mini.pretrain import letter_hits

    model.eval()
    with torch.inference_mode():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model.train()
    right, asked = letter_hits(logits, batch)
    return right / asked


def train_text(model: Any, tokenizer: Any, cfg: PretrainText, log_path: Path) -> list[dict[str, float]]:
    """Run the drills on the language model (the vision tower gets no gradient: no frames); returns
    the held-out letter accuracy every ``eval_every`` steps (200 fixed drills; chance 20%), also
    written to ``log_path`` (replaced)."""
    import torch

    names = object_names()
    held_out = held_out_drills(tokenizer, cfg)
    rng = np.random.default_rng(cfg.seed)
    params = [p for n, p in model.named_parameters() if ".visual." not in f".{n}" and p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    log_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row = {"text_step": step, "text_letter_accuracy": letter_accuracy(model, held_out)}
            history.append(row)
            with log_path.open("a") as f:
                f.write(json.dumps(row | {"elapsed_s": round(time.perf_counter() - t0, 1)}) + "\n")
            log.info(
                "text step %d: held-out option letters right %.1f%%", step, 100 * row["text_letter_accuracy"]
            )
        if step == cfg.steps:
            break
        loss = drill_loss(model, drill_batch(tokenizer, rng, cfg.batch_size, names), cfg.answer_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return history
