"""The base stage (experiments.mini.pretrain): descriptions only, never the QA; a few steps lower the loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from egovlm.contract import SYSTEM_PROMPT
from egovlm.frames import Frame
from egovlm.models.tokenizer import ANSWER_TAGS
from egovlm.schema import read_jsonl
from egovlm.train.config import ConfigError
from experiments.mini.pretrain_data import (
    TASKS,
    WRAP_TAGS,
    ClipTruth,
    build_examples,
    describe,
    draw_blocks,
    held_at,
    instructions,
    load_truth,
    target_text,
    visible_objects,
)


def _frame(i: int, t: float) -> Frame:
    return Frame(i, t, np.zeros((84, 112, 3), np.uint8))


def test_held_at_follows_pick_and_put() -> None:
    events = [
        {"t": 1.0, "action": "pick_up", "object": "red cup", "hand": "right"},
        {"t": 2.0, "action": "pick_up", "object": "blue book", "hand": "left"},
        {"t": 3.0, "action": "put_down", "object": "red cup", "hand": "right"},
    ]
    assert held_at(events, 0.5) == {}
    assert held_at(events, 1.0) == {"right": "red cup"}  # from the pick-up frame on
    assert held_at(events, 2.5) == {"right": "red cup", "left": "blue book"}
    assert held_at(events, 3.5) == {"left": "blue book"}


def test_descriptions_cite_the_nearest_frame() -> None:
    clip = ClipTruth(
        "c",
        Path("v.mp4"),
        6.0,
        [
            {"start": 0.0, "end": 0.0, "text": "At the start, the red cup is on the shelf."},
            {
                "start": 2.4,
                "end": 2.9,
                "text": "At 2.4 s the right hand picks up the red cup from the shelf.",
            },
            {"start": 6.0, "end": 6.0, "text": "By 6.0 s the red cup is in the sink."},
        ],
        [{"t": 2.4, "action": "pick_up", "object": "red cup", "hand": "right"}],
    )
    frames = [_frame(1, 0.5), _frame(2, 2.0), _frame(3, 3.5), _frame(4, 5.0)]
    assert describe(clip, frames, "event_frames") == "2"
    assert describe(clip, frames, "events").endswith("from the shelf (frame 2).")
    assert describe(clip, frames, "hands").splitlines()[2] == ("Frame 3: the right hand holds the red cup.")
    blocks = [("scene", "notes"), ("event_frames", "list")]
    assert target_text(clip, frames, blocks).startswith("<notes>At the start,")
    assert target_text(clip, frames, blocks).endswith("<list>2</list>")
    assert "inside <notes></notes>, then the numbers" in instructions(blocks)


def test_blocks_never_use_the_answer_grammar() -> None:
    rng = np.random.default_rng(0)
    grammar = {t.strip("</>") for t in ANSWER_TAGS}
    assert not grammar & set(WRAP_TAGS)
    letters = set()
    for _ in range(300):
        blocks = draw_blocks(rng, list(TASKS))
        assert 1 <= len(blocks) <= 3
        assert len({t for t, _ in blocks}) == len(blocks) == len({g for _, g in blocks})
        letters |= {t.partition(":")[2] for t, _ in blocks if t.startswith("letter:")}
    assert len(letters) > 15  # any of the 26 capitals, not the five option letters
    assert "the capital letter Q inside <log></log>" in instructions([("letter:Q", "log")])


def test_visible_objects_come_from_the_renderer(synth_slice: Path) -> None:
    clips = load_truth(synth_slice)
    names = {
        o["name"]
        for row in (synth_slice / "clips.jsonl").read_text().splitlines()
        for o in json.loads(row)["objects"]
    }
    seen = [n for c in clips for t in np.linspace(0.2, 7.8, 12) for n in visible_objects(c, float(t))]
    assert seen and set(seen) <= names
    assert len(set(seen)) >= 3


def test_examples_contain_no_question_option_letter_or_grammar(synth_slice: Path) -> None:
    examples = build_examples(synth_slice, 4, 2, (112, 84), seed=0, per_set=3)
    assert len(examples) == 3 * 2 * 3
    questions = {item.question for item in read_jsonl(synth_slice / "qa.jsonl")}
    for ex in examples:
        texts = [ex.target] + [c.get("text") or "" for m in ex.prompt() for c in m["content"]]
        joined = "\n".join(texts)
        assert not any(tag in joined for tag in ANSWER_TAGS)
        assert SYSTEM_PROMPT not in joined
        assert not any(q in joined for q in questions)
        assert "Options:" not in joined
        assert [f.index for f in ex.frames] == [1, 2, 3, 4]
        assert [f.image.shape for f in ex.frames] == [(84, 112, 3)] * 4


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from experiments.mini.pretrain import load_pretrain_config

    cfg = tmp_path / "p.yaml"
    cfg.write_text("run: {output_dir: x}\ndata: {train: y}\noptim: {stepz: 3}\n")
    with pytest.raises(ConfigError, match="stepz"):
        load_pretrain_config(cfg)
    cfg.write_text("run: {output_dir: x}\ndata: {train: y}\n")
    assert load_pretrain_config(cfg, ["optim.steps=7"]).optim.steps == 7


def test_pretrain_runs_and_lowers_the_loss(synth_slice: Path, tmp_path: Path) -> None:
    from egovlm.models.loading import load_model
    from experiments.mini.pretrain import load_pretrain_config, pretrain

    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text(
        f"run: {{output_dir: {tmp_path / 'run'}, threads: 1, log_every: 2}}\n"
        "model: {build: tiny, seed: 0}\n"
        f"data: {{train: {synth_slice}, val: {synth_slice}, frames: 4, frame_sets: 1, per_set: 2, val_clips: 2}}\n"
        "optim: {steps: 12, batch_size: 2, lr: 3.0e-3, warmup_steps: 2, eval_every: 100}\n"
    )
    summary = pretrain(load_pretrain_config(cfg))
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(val) == 2  # before the first step and after the last
    assert val[-1] < 0.8 * val[0]
    final = Path(summary["final_dir"])
    meta = json.loads((final / "egovlm.json").read_text())
    assert meta["stage"] == "pretrain" and meta["preset"] == "tiny"
    loaded = load_model(final)  # safetensors + processor with the wrapper tags as single tokens
    tok = loaded.tokenizer
    assert len(tok.tokenize("<notes>")) == 1
    emb = loaded.model.get_input_embeddings().weight.detach()
    assert emb.shape[0] >= len(tok)
    # the answer tags were set to "a tag" (mean of the wrapper tags of their kind), not left random
    opening = emb[[tok.convert_tokens_to_ids(f"<{t}>") for t in WRAP_TAGS]].mean(0)
    think = emb[tok.convert_tokens_to_ids("<think>")]
    assert float(think @ opening) / float(think.norm() * opening.norm()) > 0.5
    assert meta["pretrain"]["answer_tags_initialised"] == list(ANSWER_TAGS)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


def test_a_second_phase_continues_from_the_first(synth_slice: Path, tmp_path: Path) -> None:
    """Single-frame phase, then 8-frame phase from its final/: the second starts where the first ended."""
    from experiments.mini.pretrain import load_pretrain_config, pretrain

    def phase(name: str, frames: int, extra: str = "", text: str = "") -> tuple[dict, list[float]]:
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(
            f"run: {{output_dir: {tmp_path / name}, threads: 1, log_every: 2}}\n"
            f"model: {{build: tiny, seed: 0{extra}}}\n"
            f"data: {{train: {synth_slice}, val: {synth_slice}, frames: {frames}, frame_sets: 1, per_set: 1,"
            " perception_per_set: 1, val_clips: 2}\n"
            "optim: {steps: 10, batch_size: 2, lr: 3.0e-3, warmup_steps: 2, eval_every: 100}\n" + text
        )
        summary = pretrain(load_pretrain_config(cfg))
        rows = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        return summary, [r["val_loss"] for r in rows if "val_loss" in r]

    first, val1 = phase("one_frame", 1, text="text: {steps: 4, batch_size: 4, eval_every: 2}\n")
    assert [r["text_step"] for r in first["text"]] == [0, 2, 4]  # the lookup drills ran first
    assert (tmp_path / "one_frame" / "text_log.jsonl").is_file()
    second, val2 = phase("eight_frames", 4, f", init_from: {first['final_dir']}")
    assert val2[0] < val1[0] - 1.0  # not a fresh random model (which starts near ln(vocab), like val1[0])
    assert second["continued_from"] == first["final_dir"] and second["text"] == []
    assert not (tmp_path / "eight_frames" / "init").exists()
    meta = json.loads((Path(second["final_dir"]) / "egovlm.json").read_text())
    assert meta["pretrain"]["continued_from"] == first["final_dir"]
    # with perception questions in val, the run reports the teacher-forced option-letter accuracy
    for key in ("val_letter_accuracy", "val_letter_accuracy_shuffled_frames"):
        assert 0.0 <= second[key] <= 1.0


def test_init_from_a_folder_without_a_model_is_named(synth_slice: Path, tmp_path: Path) -> None:
    from experiments.mini.pretrain import load_pretrain_config, pretrain

    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        f"run: {{output_dir: {tmp_path / 'run'}}}\nmodel: {{init_from: {tmp_path / 'nothing'}}}\n"
        f"data: {{train: {synth_slice}}}\n"
    )
    with pytest.raises(ConfigError, match=r"init_from: .*nothing has no config.json"):
        pretrain(load_pretrain_config(cfg))


def test_mini_base_stage_configs_chain_the_single_frame_phases_into_the_8_frame_phase() -> None:
    """experiments/mini/configs: phase 1a trains the vision tower and reads single frames from random
    init; phase 1b continues it on single frames; phase 2 continues from 1b on the QA's 8-frame prompts.
    The lookup drills are mixed into every phase's language steps, never run before the frames."""
    from experiments.mini.pretrain import load_pretrain_config

    repo = Path(__file__).resolve().parents[3]
    mini = repo / "experiments" / "mini" / "configs"
    phase1a = load_pretrain_config(mini / "pretrain_1frame.yaml")
    phase1b = load_pretrain_config(mini / "pretrain_1frame_binding.yaml")
    phase2 = load_pretrain_config(mini / "pretrain.yaml")
    assert phase1a.model.init_from is None and phase1a.vision.steps > 0
    for earlier, later in ((phase1a, phase1b), (phase1b, phase2)):
        assert later.model.init_from is not None
        assert Path(later.model.init_from) == Path(earlier.run.output_dir) / "final"
        assert later.vision.steps == 0
    assert phase1a.data.frames == phase1b.data.frames == 1 and phase2.data.frames == 8
    for phase in (phase1a, phase1b, phase2):
        assert phase.text.steps == 0 and phase.text.mix_batch > 0
        assert phase.data.perception_per_set > 0


class _TagTokenizer:
    """Just enough tokenizer for answer_position: ``<answer>`` is id 7."""

    def convert_tokens_to_ids(self, token: str) -> int:
        assert token == "<answer>"
        return 7


def test_answer_position_is_the_token_after_the_targets_answer_tag() -> None:
    import torch

    from experiments.mini.pretrain import answer_position

    ids = torch.tensor([1, 7, 3, 4, 9, 7, 12, 8, 2])  # a <answer> (7) in the prompt, one in the target
    assert answer_position(_TagTokenizer(), ids, target_start=3) == 6
    assert answer_position(_TagTokenizer(), ids, target_start=7) == -1  # a description: no letter


def test_weighted_loss_is_the_plain_mean_at_weight_1_and_weights_only_the_letter() -> None:
    import torch

    from experiments.mini.pretrain import IGNORE, weighted_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 5, 6], [IGNORE, 2, 3, 4, IGNORE, IGNORE]])
    answer_at = torch.tensor([4, -1])  # row 0's letter is token 4 (label 5); row 1 has none
    plain = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE
    )
    assert torch.allclose(weighted_loss(logits, labels, answer_at, 1.0), plain)
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE, reduction="none"
    ).view(2, 5)
    mask = labels[:, 1:] != IGNORE
    letter = ce[0, 3]  # logits at position 3 predict token 4
    expected = (ce[mask].sum() + 9 * letter) / (int(mask.sum()) + 9)
    assert torch.allclose(weighted_loss(logits, labels, answer_at, 10.0), expected)


def test_letter_hits_counts_teacher_forced_argmax_letters_of_questions_only() -> None:
    import torch

    from experiments.mini.pretrain import letter_hits

    logits = torch.zeros(3, 5, 10)
    ids = torch.tensor([[0, 0, 0, 4, 0], [0, 0, 6, 0, 0], [0, 0, 0, 0, 0]])
    logits[0, 2, 4] = 5.0  # row 0: the letter (token 3 = 4) predicted from position 2: right
    logits[1, 1, 3] = 5.0  # row 1: predicts 3, the letter is 6: wrong
    batch = {"input_ids": ids, "answer_at": torch.tensor([3, 2, -1])}  # row 2: a description
    assert letter_hits(logits, batch) == (1, 2)
