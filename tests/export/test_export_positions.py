"""Host-side M-RoPE positions equal transformers' get_rope_index token for token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from egovlm.contract import build_messages
from egovlm.export.positions import decode_positions, mrope_positions
from egovlm.export.prompts import generated_prompts


def test_positions_match_get_rope_index(tiny_model_dir: Path) -> None:
    from egovlm.models import load_model

    loaded = load_model(tiny_model_dir)
    model = loaded.model
    for prompt in generated_prompts(2, loaded.keyframe_size, frames_per_prompt=3, seed=5):
        messages = build_messages(prompt.frames, prompt.question, prompt.options)
        text = loaded.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = loaded.processor(text=[text], images=[f.pil() for f in prompt.frames], return_tensors="pt")
        with torch.no_grad():
            ref, deltas = model.model.get_rope_index(
                inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"]
            )
        grids = [(int(h) // 2, int(w) // 2) for _, h, w in inputs["image_grid_thw"]]
        ids = inputs["input_ids"][0].numpy()
        ours, next_pos = mrope_positions(ids, model.config.image_token_id, grids)
        np.testing.assert_array_equal(ours, ref[:, 0].numpy())
        # HF's decode positions are cache_length + rope_delta; ours continue from next_pos.
        assert next_pos == ids.size + int(deltas[0, 0])


def test_prefix_then_suffix_equals_whole() -> None:
    ids = np.array([5, 6, 9, 9, 9, 9, 9, 9, 7, 8, 9, 9, 9, 9, 9, 9, 4, 3])
    grids = [(2, 3), (3, 2)]
    whole, end = mrope_positions(ids, 9, grids)
    head, mid = mrope_positions(ids[:9], 9, grids[:1])
    tail, end2 = mrope_positions(ids[9:], 9, grids[1:], start=mid)
    np.testing.assert_array_equal(np.concatenate([head, tail], axis=1), whole)
    assert end == end2 == whole.max() + 1
    # the first image: t constant, h = start + row, w = start + col
    np.testing.assert_array_equal(whole[:, 2:8], [[2] * 6, [2, 2, 2, 3, 3, 3], [2, 3, 4, 2, 3, 4]])
    np.testing.assert_array_equal(decode_positions(end, 2), [[end, end + 1]] * 3)


@pytest.mark.parametrize(
    ("ids", "grids", "message"),
    [
        ([1, 9, 9, 9, 2], [(2, 2)], "expected a run of 4"),
        ([1, 9, 9, 9, 9, 9, 2], [(2, 2)], "expected a run of 4"),
        ([1, 9, 9, 2], [], "only 0 image grid"),
        ([1, 2], [(1, 1)], "1 image grid(s) given but 0"),
    ],
)
def test_bad_image_runs_are_named(ids: list[int], grids: list[tuple[int, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mrope_positions(ids, 9, grids)
