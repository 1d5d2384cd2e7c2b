"""The letter-binding probe: its question names one option, its target is that option's letter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.mini import binding_probe as probe


def test_probe_examples_ask_for_one_option_and_weight_its_letter(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rng = np.random.default_rng(0)
    for prompt_weight in (0.0, 1.0):
        ids, weights, at = probe.example(tok, rng, prompt_weight)
        text = tok.decode(ids[:at])
        asked = text.split("Which option is the ")[1].split("?")[0]
        options = dict(
            line.split(". ", 1) for line in text.split("Options:\n")[1].split("<|im_end|>")[0].splitlines()
        )
        letter = tok.decode([ids[at]]).strip()
        assert options[letter] == f"the {asked}" and text.endswith(f"The {asked} is option")
        assert weights[at] == probe.LETTER_WEIGHT and weights[0] == 0.0
        start = next(i for i in range(len(ids)) if "Question" in tok.decode(ids[: i + 1]))
        end = ids.index(tok.convert_tokens_to_ids("<|im_end|>"))
        assert set(weights[start:end]) == {prompt_weight}  # the question block's weight
        assert weights[at - 1] == 1.0  # the think's words always have a loss
