"""Text-only probe: how fast does a decoder of the nano preset's shape learn letter binding?

A base model that never binds an option's text to its letter answers one letter to every
multiple-choice question (docs/mini_experiment/LOG.md, run 3). This probe isolates that skill,
without frames: a random-init ``Qwen2ForCausalLM`` with the text dimensions of a preset
(Qwen2.5-VL's decoder is Qwen2's; with text only, M-RoPE is plain RoPE) reads

    Question: Which option is the teal mug?
    Options:
    A. the yellow lemon
    ...
    <think>The teal mug is option

and must write the letter (`` D``), weighted 10x as in the base stage; the think's words have a
loss too, as target text. ``--prompt-weight`` also puts a next-token loss on the question block
(from ``Question:`` to the user turn's end); it does not help (docs/mini_experiment/LOG.md, the
binding probes), so the base stage has no such loss.
It reports the held-out teacher-forced letter accuracy every ``--every`` steps (200 fixed
questions; chance 20%) as JSON lines.

    .venv/bin/python -m experiments.mini.binding_probe --steps 800 --prompt-weight 1 \
        --out runs/probe/pw1.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egovlm.contract import question_text
from egovlm.models.presets import PRESETS
from egovlm.models.tokenizer import build_tokenizer
from egovlm.synth.objects import CATALOGUE
from experiments.mini.pretrain_text import lookup_options

LETTER_WEIGHT = 10.0


def example(tok: Any, rng: np.random.Generator, prompt_weight: float) -> tuple[list[int], list[float], int]:
    """(token ids, per-token loss weights for predicting each token, index of the letter token)."""
    options, letter = lookup_options(rng, [c.name for c in CATALOGUE])
    asked = options[letter][len("the ") :]
    user = f"<|im_start|>user\n{question_text(f'Which option is the {asked}?', options)}<|im_end|>\n"
    head = f"{user}<|im_start|>assistant\n<think>The {asked} is option"
    ids = tok(head, add_special_tokens=False)["input_ids"]
    n_user = len(tok(user, add_special_tokens=False)["input_ids"])
    # the question block at prompt_weight; the think's start ("The teal mug is option") is target text
    # in the base stage, so it always has a loss
    weights = [(prompt_weight if i < n_user else 1.0) if i > 0 else 0.0 for i in range(len(ids))]
    at = len(ids)
    tail = tok(f" {letter}.</think>", add_special_tokens=False)["input_ids"]
    ids += tail
    weights += [LETTER_WEIGHT] + [1.0] * (len(tail) - 1)
    return ids, weights, at


def batch(tok: Any, rng: np.random.Generator, n: int, prompt_weight: float) -> dict[str, torch.Tensor]:
    rows = [example(tok, rng, prompt_weight) for _ in range(n)]
    width = max(len(r[0]) for r in rows)
    ids = torch.zeros((n, width), dtype=torch.long)
    weights = torch.zeros((n, width))
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, (r_ids, r_w, _) in enumerate(rows):
        ids[i, : len(r_ids)] = torch.tensor(r_ids)
        weights[i, : len(r_w)] = torch.tensor(r_w)
        mask[i, : len(r_ids)] = 1
    return {
        "input_ids": ids,
        "weights": weights,
        "attention_mask": mask,
        "at": torch.tensor([r[2] for r in rows]),
    }


def loss_of(model: Any, b: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
    ce = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), b["input_ids"][:, 1:].flatten(), reduction="none"
    ).view_as(b["weights"][:, 1:])
    w = b["weights"][:, 1:]
    return (ce * w).sum() / w.sum()


@torch.inference_mode()
def letter_accuracy(model: Any, b: dict[str, torch.Tensor]) -> float:
    model.eval()
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    rows = torch.arange(len(b["at"]))
    right = logits[rows, b["at"] - 1].argmax(-1) == b["input_ids"][rows, b["at"]]
    model.train()
    return float(right.float().mean())


def build(preset_name: str, vocab: int) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    p = PRESETS[preset_name]
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=p.hidden_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_kv_heads,
        intermediate_size=p.intermediate_size,
        rope_theta=1_000_000.0,  # Qwen2.5-VL's
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    )
    return Qwen2ForCausalLM(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="nano", choices=sorted(PRESETS))
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--prompt-weight", type=float, default=0.0)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="JSON lines: one row per evaluation")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = build_tokenizer(PRESETS[args.preset].vocab_size)
    model = build(args.preset, len(tok))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    held_out = batch(tok, np.random.default_rng(10_000 + args.seed), 200, args.prompt_weight)
    rng = np.random.default_rng(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with args.out.open("w") as log:
        for step in range(args.steps + 1):
            if step % args.every == 0:
                row = {
                    "step": step,
                    "letter_accuracy": letter_accuracy(model, held_out),
                    "s": time.time() - start,
                }
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(json.dumps(row), flush=True)
            if step == args.steps:
                break
            loss = loss_of(model, batch(tok, rng, args.batch, args.prompt_weight))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()


if __name__ == "__main__":
    main()
