"""Text-only lookup drills (experiments.mini.pretrain_text): the right letter, the contract's question block."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from egovlm.contract import parse_answer, question_text
from egovlm.schema import OPTION_LETTERS
from egovlm.synth.objects import CATALOGUE
from experiments.mini.pretrain_text import (
    IGNORE,
    PretrainText,
    drill_batch,
    drill_text,
    encode_drill,
    train_text,
)

NAMES = [c.name for c in CATALOGUE]


def test_a_drill_asks_for_one_of_five_distinct_objects_and_answers_its_letter() -> None:
    rng = np.random.default_rng(0)
    letters = Counter()
    for _ in range(200):
        question, target, letter = drill_text(rng, NAMES)
        lines = question.splitlines()
        asked = lines[0].removeprefix("Question: Which option is the ").removesuffix("?")
        options = dict(line.split(". ", 1) for line in lines[2:])
        assert question == question_text(f"Which option is the {asked}?", options)
        assert list(options) == list(OPTION_LETTERS) and len(set(options.values())) == 5
        assert options[letter] == f"the {asked}"
        parsed = parse_answer(target)
        assert parsed.format_ok and parsed.answer == letter and asked in (parsed.think or "")
        # the letter is bound at the answer, not copied from the think
        assert f"option {letter}" not in target
        letters[letter] += 1
    assert set(letters) == set(OPTION_LETTERS) and max(letters.values()) < 70  # ~40 each


def test_an_encoded_drill_has_loss_on_the_target_only_and_points_at_the_letter(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    question, target, letter = drill_text(np.random.default_rng(1), NAMES)
    ids, labels, at = encode_drill(tok, question, target)
    first = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    assert tok.decode(labels[first:]) == target + "<|im_end|>\n"
    assert tok.decode([ids[at]]) == letter and tok.decode([ids[at - 1]]) == "<answer>"


def test_text_steps_train_the_language_model_and_leave_the_vision_tower(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    visual = {n: p.detach().clone() for n, p in model.named_parameters() if ".visual." in f".{n}"}
    text = {n: p.detach().clone() for n, p in model.named_parameters() if ".visual." not in f".{n}"}
    cfg = PretrainText(steps=30, batch_size=8, lr=3e-3, eval_every=15)
    fixed = drill_batch(tok, np.random.default_rng(5), 16, NAMES)

    def loss() -> float:
        with torch.no_grad():
            return float(model(**{k: fixed[k] for k in ("input_ids", "attention_mask", "labels")}).loss)

    before = loss()
    history = train_text(model, tok, cfg, tmp_path / "text_log.jsonl")
    after = loss()
    assert [h["text_step"] for h in history] == [0, 15, 30]
    assert all(0.0 <= h["text_letter_accuracy"] <= 1.0 for h in history)
    rows = [json.loads(line) for line in (tmp_path / "text_log.jsonl").read_text().splitlines()]
    assert [r["text_step"] for r in rows] == [0, 15, 30]
    assert after < 0.7 * before  # the drills' target text is learned
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in visual.items())
    assert any(not torch.equal(params[n], v) for n, v in text.items())


def test_drills_mixed_into_the_language_steps_are_learned_and_measured(
    synth_slice: Path, tmp_path: Path
) -> None:
    """text.mix_batch: each language step adds a drill batch's loss; training rows log it,
    validation rows the held-out drills' letter accuracy."""
    from experiments.mini.pretrain import load_pretrain_config, pretrain

    cfg = tmp_path / "mix.yaml"
    cfg.write_text(
        f"run: {{output_dir: {tmp_path / 'run'}, threads: 1, log_every: 2}}\n"
        "model: {build: tiny, seed: 0}\n"
        f"data: {{train: {synth_slice}, val: {synth_slice}, frames: 1, frame_sets: 1, per_set: 1,"
        " perception_per_set: 1, val_clips: 2}\n"
        "optim: {steps: 16, batch_size: 2, lr: 3.0e-3, warmup_steps: 2, eval_every: 8}\n"
        "text: {mix_batch: 4, mix_weight: 1.0}\n"
    )
    summary = pretrain(load_pretrain_config(cfg))
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    assert len(train) == 8 and all("drill_loss" in r for r in train)
    assert train[-1]["drill_loss"] < 0.7 * train[0]["drill_loss"]
    assert [r["step"] for r in val] == [0, 8, 16]
    assert all(0.0 <= r["drill_letter_accuracy"] <= 1.0 for r in val)
    assert summary["drill_letter_accuracy"] == val[-1]["drill_letter_accuracy"]
    assert summary["text"] == []  # no separate text steps


def test_a_mixed_drill_batch_does_not_run_the_vision_tower(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from experiments.mini.pretrain_text import DrillMix

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    calls: list[int] = []
    model.model.visual.register_forward_hook(lambda *_: calls.append(1))
    mix = DrillMix(tok, PretrainText(mix_batch=3, mix_weight=0.5))
    loss = mix.loss(model)
    loss.backward()
    assert calls == [] and loss.ndim == 0 and float(loss.detach()) > 0
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if ".visual." in f".{n}")
    assert any(
        g is not None and bool(g.abs().sum() > 0) for n, g in grads.items() if ".visual." not in f".{n}"
    )
    assert 0.0 <= mix.accuracy(model) <= 1.0
