"""Open questions (``options`` None) through the training rows: columns, the HF dataset, the rewards."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from egovlm.contract import format_answer
from egovlm.frames import frame_set
from egovlm.schema import QAItem
from egovlm.train.dataset import PreparedItem, hf_dataset, row
from egovlm.train.rewards import AccuracyReward


def _prepared(tmp_path: Path, item: QAItem) -> PreparedItem:
    frames = frame_set([np.zeros((8, 8, 3), np.uint8)] * 2, [0.5, 1.5])
    for i, f in enumerate(frames, start=1):
        f.pil().save(tmp_path / f"frame_{i:03d}.png")
    return PreparedItem(item, tmp_path, frames)


def _item(**over: object) -> QAItem:
    fields = {
        "id": "q",
        "video": "v.mp4",
        "question": "Which object did the wearer pick up first?",
        "options": {"A": "the red cup", "B": "the yellow banana"},
        "answer": "B",
        "salient_times": [1.0],
        "duration_s": 2.0,
        "question_type": "first_pickup",
        "source": "test",
    }
    fields.update(over)
    return QAItem.model_validate(fields)


def test_rows_carry_letters_and_option_texts_and_none_for_an_open_question(tmp_path: Path) -> None:
    mc = row(_prepared(tmp_path, _item()), selector_k=1)
    opn = row(_prepared(tmp_path, _item(id="o", options=None, answer="the yellow banana")), selector_k=1)
    assert (mc["letters"], mc["option_texts"]) == ("AB", ["the red cup", "the yellow banana"])
    assert (opn["letters"], opn["option_texts"], opn["answer"]) == (None, [], "the yellow banana")
    assert "Options:" not in opn["prompt"][1]["content"][-1]["text"]

    ds = hf_dataset([mc, opn])  # a mixed dataset keeps None apart from a letter set
    cols = {k: ds[k] for k in ("letters", "option_texts", "answer")}
    assert cols["letters"] == ["AB", None]
    texts = [format_answer("t", [2], "the yellow banana")] * 2
    assert AccuracyReward()(prompts=[[], []], completions=texts, **cols) == [1.0, 1.0]
