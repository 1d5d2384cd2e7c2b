"""Rollouts that cannot profit from letter habits: per-rollout option shuffles (prompt, gold letter
and option texts move together), uniform groups counted and masked, and the recipe keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from egovlm.contract import build_messages, format_answer, question_text
from egovlm.frames import Frame
from egovlm.train.config import ConfigError, load_config
from egovlm.train.rewards import AccuracyReward, KeyframeReward
from egovlm.train.rollouts import (
    UNIFORM_METRIC,
    drop_completions,
    group_orders,
    pad_rows,
    rows_with_loss,
    select_rows,
    shuffle_batch,
    uniform_groups,
)

REPO = Path(__file__).resolve().parents[2]
OPTIONS = {
    "A": "the red cup",
    "B": "the blue bowl",
    "C": "the yellow banana",
    "D": "the green key",
    "E": "a pen",
}
QUESTION = "What did I pick up most recently?"


def make_row(
    qid: str = "q1", answer: str | None = "C", options: dict[str, str] | None = None
) -> dict[str, Any]:
    options = OPTIONS if options is None else options
    frames = [Frame(index=i, timestamp_s=float(i), image=np.zeros((4, 4, 3), np.uint8)) for i in (1, 2, 3)]
    return {
        "id": qid,
        "prompt": build_messages(frames, QUESTION, options),
        "question": QUESTION,
        "answer": answer,
        "letters": "".join(options),
        "option_texts": list(options.values()),
        "frame_times": [1.0, 2.0, 3.0],
        "salient_times": [2.0],
        "selector_frames": [],
        "question_type": "hand",
    }


def block(row: dict[str, Any]) -> str:
    return str(row["prompt"][-1]["content"][-1]["text"])


def shown(row: dict[str, Any]) -> dict[str, str]:
    """letter → option text as the rendered prompt shows them."""
    lines = block(row).splitlines()
    return {ln[0]: ln[3:] for ln in lines[lines.index("Options:") + 1 :]}


def test_shuffle_moves_texts_and_gold_together() -> None:
    rows, orders = shuffle_batch([make_row()] * 8, group_size=8, seed=0, step=3)
    gold_text = OPTIONS["C"]
    for row, order in zip(rows, orders, strict=True):
        assert order is not None and sorted(order) == list("ABCDE")
        on_screen = shown(row)
        assert list(on_screen) == list("ABCDE")  # the letters stay in order
        assert on_screen[row["answer"]] == gold_text  # the gold text is at the gold letter
        assert list(on_screen.values()) == row["option_texts"]  # the rewards see what the prompt shows
        assert order[ord(row["answer"]) - ord("A")] == "C"  # the order names where each text came from
        assert block(row) == question_text(QUESTION, dict(zip("ABCDE", row["option_texts"], strict=True)))
        assert row["prompt"][:-1] == make_row()["prompt"][:-1]  # system message untouched
        assert row["prompt"][-1]["content"][:-1] == make_row()["prompt"][-1]["content"][:-1]  # frames too
    assert len(set(orders)) == 8  # every rollout of the question has its own permutation
    assert {r["answer"] for r in rows} == set("ABCDE")  # the gold visits every letter
    counts = [sum(r["answer"] == x for r in rows) for x in "ABCDE"]
    assert max(counts) - min(counts) <= 1  # ... evenly: a letter habit earns no advantage


def test_same_seed_same_permutations_and_each_key_part_matters() -> None:
    batch = [make_row()] * 4
    first = shuffle_batch(batch, 4, seed=7, step=11)[1]
    assert shuffle_batch(batch, 4, seed=7, step=11)[1] == first  # a resumed run draws the same
    assert len(set(first)) == 4  # 4 rollouts, 4 permutations
    others = [
        shuffle_batch(batch, 4, seed=8, step=11)[1],
        shuffle_batch(batch, 4, seed=7, step=12)[1],
        shuffle_batch([make_row("q2")] * 4, 4, seed=7, step=11)[1],
    ]
    assert all(o != first for o in others)
    # A process holding the second half of the group draws the same rollouts as one holding it all.
    assert shuffle_batch(batch[:2], 4, seed=7, step=11, offset=2)[1] == first[2:]


def test_group_orders_are_distinct_up_to_n_factorial() -> None:
    orders = group_orders(3, gold=1, group_size=6, key="k")
    assert len(set(orders)) == 6 and all(sorted(o) == [0, 1, 2] for o in orders)


def test_the_shuffle_survives_a_datasets_round_trip() -> None:
    from datasets import Dataset

    stored = Dataset.from_list([make_row()])[0]  # content items gain text: None etc.
    rows, _ = shuffle_batch([stored] * 5, 5, seed=0, step=0)
    assert all(shown(r)[r["answer"]] == OPTIONS["C"] for r in rows)


def test_each_rollout_is_scored_against_its_own_gold() -> None:
    rows, _ = shuffle_batch([make_row()] * 5, 5, seed=1, step=0)
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    prompts = [r["prompt"] for r in rows]
    reward = AccuracyReward()
    own = [format_answer("", [2], r["answer"]) for r in rows]
    assert reward(prompts, own, **columns) == [1.0] * 5
    habit = [format_answer("", [2], "C")] * 5  # the original gold letter, every time
    assert reward(prompts, habit, **columns) == [float(r["answer"] == "C") for r in rows]
    assert reward(prompts, habit, **columns).count(1.0) == 1  # right on one rollout of five
    by_text = [format_answer("", [2], OPTIONS["C"])] * 5  # the gold text reads as each rollout's letter
    assert reward(prompts, by_text, **columns) == [1.0] * 5
    keyframe = KeyframeReward(requires_correct=True)
    assert keyframe(prompts, own, **columns) == [1.0] * 5  # cites frame 2 (t = 2 s) with the right answer


def test_open_questions_and_foreign_prompts() -> None:
    open_row = make_row(answer="the yellow banana", options={})
    open_row.update(
        letters=None,
        option_texts=[],
        prompt=build_messages(
            [Frame(index=1, timestamp_s=0.0, image=np.zeros((4, 4, 3), np.uint8))], QUESTION
        ),
    )
    rows, orders = shuffle_batch([open_row] * 2, 2, seed=0, step=0)
    assert orders == [None, None] and rows == [open_row] * 2
    foreign = make_row()
    foreign["prompt"][-1]["content"][-1]["text"] += "\nAnswer quickly."
    with pytest.raises(ValueError, match="question block"):
        shuffle_batch([foreign] * 2, 2, seed=0, step=0)
    with pytest.raises(RuntimeError, match="RepeatSampler"):
        shuffle_batch([make_row("a"), make_row("b")], 2, seed=0, step=0)


def test_uniform_groups_and_their_masking() -> None:
    # two groups of 4; columns: format, accuracy, keyframe (NaN: does not apply)
    nan = float("nan")
    rewards = torch.tensor(
        [[1.0, 0.0, nan]] * 4 + [[1.0, 1.0, nan], [1.0, 0.0, nan], [0.5, 0.0, nan], [1.0, 1.0, nan]]
    )
    weights = torch.tensor([0.5, 1.0, 0.5])
    uniform = uniform_groups(rewards, weights, 4)
    assert uniform.tolist() == [True, False]
    assert uniform.float().mean().item() == 0.5  # what the trainer logs as UNIFORM_METRIC
    assert UNIFORM_METRIC == "uniform_group_fraction"
    unscorable = torch.full((4, 3), nan)  # no reward applies: no signal either
    assert uniform_groups(unscorable, weights, 4).tolist() == [True]

    lengths = [5, 3, 4, 5, 2, 5, 1, 4]
    mask = torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])
    output = {
        "completion_mask": mask.clone(),
        "advantages": torch.tensor([0.0, 0.0, 0.0, 0.0, 1.2, -0.3, -1.1, 0.2]),
        "num_items_in_batch": mask.sum(),
    }
    drop_completions(output, uniform.repeat_interleave(4), gather=lambda t: t.unsqueeze(0))
    assert output["completion_mask"][:4].sum() == 0  # the uniform group leaves the loss
    assert torch.equal(output["completion_mask"][4:], mask[4:])  # the other group is untouched
    assert output["num_items_in_batch"].item() == sum(lengths[4:])  # the dapo normaliser follows
    assert output["advantages"][4:].tolist() == pytest.approx([1.2, -0.3, -1.1, 0.2])


def tiny_recipe(tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"run.output_dir={tmp_path / 'run'}",
        "grpo.per_device_train_batch_size=8",
        "grpo.num_generations=4",
        *extra,
    ]


def test_recipe_keys_and_batch_checks(tmp_path: Path) -> None:
    recipe = REPO / "configs" / "tiny_cpu.yaml"
    cfg = load_config(recipe, [f"run.output_dir={tmp_path}"])
    assert not cfg.rollouts.shuffle_options and not cfg.rollouts.drop_uniform_groups  # today's behaviour
    on = load_config(
        recipe, tiny_recipe(tmp_path, "rollouts.shuffle_options=true", "rollouts.drop_uniform_groups=true")
    )
    assert on.rollouts.shuffle_options and on.rollouts.drop_uniform_groups
    assert on.to_dict()["rollouts"] == {
        "shuffle_options": True,
        "drop_uniform_groups": True,
        "answers": "options",
        "explore_citations": 0.0,
        "citation_credit": "shared",
    }
    with pytest.raises(ConfigError, match="rollouts.answers must be options or free"):
        load_config(recipe, tiny_recipe(tmp_path, "rollouts.answers=letters"))
    for engine in ("use_vllm", "use_transformers_continuous_batching"):
        with pytest.raises(ConfigError, match=f"set rollouts.answers=free with grpo.{engine}=true"):
            load_config(recipe, tiny_recipe(tmp_path, f"grpo.{engine}=true"))
    with pytest.raises(ConfigError, match=r"explore_citations must be in \[0, 1\]"):
        load_config(recipe, tiny_recipe(tmp_path, "rollouts.explore_citations=1.5"))
    with pytest.raises(ConfigError, match="set rollouts.explore_citations=0 with grpo.use_vllm=true"):
        load_config(
            recipe,
            tiny_recipe(
                tmp_path, "rollouts.explore_citations=0.2", "rollouts.answers=free", "grpo.use_vllm=true"
            ),
        )
    with pytest.raises(ConfigError, match="one question per generation batch"):
        load_config(
            recipe, [f"run.output_dir={tmp_path}", "rollouts.drop_uniform_groups=true"]
        )  # 8 = 1 x G=8
    with pytest.raises(ConfigError, match="whole groups"):
        load_config(recipe, tiny_recipe(tmp_path, "grpo.num_generations=3"))
    with pytest.raises(ConfigError, match="not both"):
        load_config(
            recipe, tiny_recipe(tmp_path, "grpo.generation_batch_size=16", "grpo.steps_per_generation=2")
        )
    with pytest.raises(ConfigError, match="num_train_epochs"):
        load_config(recipe, tiny_recipe(tmp_path, "grpo.num_iterations=0"))
    with pytest.raises(ConfigError, match="rollouts.shuffle"):
        load_config(recipe, tiny_recipe(tmp_path, "rollouts.shuffle=true"))
    # several questions per step and each question used more than once: TRL's own keys, passed through
    reuse = load_config(recipe, tiny_recipe(tmp_path, "grpo.num_iterations=2", "grpo.num_train_epochs=2"))
    assert reuse.grpo["num_iterations"] == 2 and reuse.grpo["num_train_epochs"] == 2


class GroupProbe:
    """A reward that checks what every rollout was shown and makes the first question's group
    uniform and the second one's varied (its rollouts' gold letters all differ)."""

    __name__ = "probe"

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, str]]] = []

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        ids, answers = columns["id"], columns["answer"]
        for i, prompt in enumerate(prompts):
            text = prompt[-1]["content"][-1]["text"]
            gold = columns["option_texts"][i][columns["letters"][i].index(answers[i])]
            assert f"\n{answers[i]}. {gold}" in text, (text, answers[i], gold)
            assert gold == ["red", "green", "blue", "yellow"][int(ids[i][2:]) % 4]  # the fixture's colour
        self.batches.append(list(zip(ids, answers, strict=True)))
        return [0.0 if qid == ids[0] else float("ABCD".index(a)) for qid, a in zip(ids, answers, strict=True)]


def shuffled_dropping_recipe(tmp_path: Path, data: Path, model: Path, steps: int) -> Any:
    """The tiny recipe with both rollout switches on, ``steps`` steps, no checkpoints."""
    return load_config(
        REPO / "configs" / "tiny_cpu.yaml",
        tiny_recipe(
            tmp_path,
            f"model.path={model}",
            f"data.train={data}",
            f"grpo.max_steps={steps}",
            "grpo.save_strategy=no",
            "grpo.max_completion_length=8",
            "rollouts.shuffle_options=true",
            "rollouts.drop_uniform_groups=true",
        ),
    )


def test_tiny_grpo_with_shuffled_options_and_dropped_groups(
    tmp_path: Path, fixture_data: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from egovlm.train import rollouts
    from egovlm.train.trainer import DATA_ORDER, build_trainer

    masked: list[tuple[list[bool], list[int]]] = []

    def recording_drop(output: dict[str, Any], drop: Any, gather: Any) -> None:
        rollouts_drop(output, drop, gather)
        masked.append((drop.tolist(), output["completion_mask"].sum(dim=1).tolist()))

    rollouts_drop = rollouts.drop_completions
    monkeypatch.setattr(rollouts, "drop_completions", recording_drop)

    cfg = shuffled_dropping_recipe(tmp_path, fixture_data, tiny_model_dir, steps=2)
    probe = GroupProbe()
    trainer = build_trainer(cfg, "cpu", rewards=([probe], [1.0]))
    trainer.train()
    assert len(probe.batches) == 2
    for batch in probe.batches:
        for g in (batch[:4], batch[4:]):
            assert len({qid for qid, _ in g}) == 1  # a group is one question's rollouts
            assert sorted(a for _, a in g) == list("ABCD")  # each rollout its own gold letter
    # the first question's group (uniform by construction) left the loss, the second one stayed
    assert [d for d, _ in masked] == [[True] * 4 + [False] * 4] * 2
    assert all(sum(n[:4]) == 0 and min(n[4:]) > 0 for _, n in masked)
    fractions = [e[UNIFORM_METRIC] for e in trainer.state.log_history if UNIFORM_METRIC in e]
    assert fractions == [0.5, 0.5]
    lines = [json.loads(x) for x in (tmp_path / "run" / DATA_ORDER).read_text().splitlines()]
    assert [len(set(line["orders"][:4])) for line in lines] == [4, 4]


def test_select_rows_keeps_each_rows_images_and_refuses_foreign_fields() -> None:
    grid = torch.tensor([[1, 2, 2], [1, 2, 2], [1, 2, 4]])  # rows own 1 and 2 images: 4 + 4 + 8 patches
    batch = {
        "completion_ids": torch.tensor([[1, 2], [3, 4]]),
        "completion_mask": torch.tensor([[0, 0], [1, 0]]),
        "pixel_values": torch.arange(16.0).unsqueeze(1),
        "image_grid_thw": grid,
        "num_images": [1, 2],
        "num_items_in_batch": torch.tensor(1),
    }
    index = rows_with_loss(batch)
    assert index is not None and index.tolist() == [1]
    picked = select_rows(batch, index)
    assert picked["pixel_values"].flatten().tolist() == list(range(4, 16))  # the second row's 12 patches
    assert torch.equal(picked["image_grid_thw"], grid[1:]) and picked["num_images"] == [2]
    assert picked["num_items_in_batch"].item() == 1 and picked["completion_ids"].tolist() == [[3, 4]]
    assert rows_with_loss({**batch, "completion_mask": torch.ones(2, 2)}) is None  # nothing to leave out
    assert rows_with_loss({**batch, "completion_mask": torch.zeros(2, 2)}).tolist() == [0]  # still a step
    with pytest.raises(ValueError, match="'extra' has 3 rows"):
        select_rows({**batch, "extra": torch.zeros(3)}, index)


def test_rows_without_loss_tokens_are_skipped_with_the_same_loss_and_gradient(
    tmp_path: Path, fixture_data: Path, tiny_model_dir: Path
) -> None:
    from trl import GRPOTrainer

    from egovlm.train.trainer import build_trainer

    cfg = shuffled_dropping_recipe(tmp_path, fixture_data, tiny_model_dir, steps=1)
    trainer = build_trainer(cfg, "cpu", rewards=([GroupProbe()], [1.0]))  # the first group is uniform
    batches: list[dict[str, Any]] = []
    forwarded: list[int] = []
    compute_loss, logps = trainer._compute_loss, trainer._get_per_token_logps_and_entropies

    def recording_loss(model: Any, inputs: dict[str, Any]) -> Any:
        batches.append(inputs)
        return compute_loss(model, inputs)

    def counting_logps(model: Any, input_ids: Any, *args: Any, **kwargs: Any) -> Any:
        if batches:  # the loss's forward (generation scores the reference model's log-probs too)
            forwarded.append(int(input_ids.shape[0]))
        return logps(model, input_ids, *args, **kwargs)

    trainer._compute_loss = recording_loss
    trainer._get_per_token_logps_and_entropies = counting_logps
    trainer.train()
    assert forwarded == [4]  # the training step forwarded the varied group only

    model = trainer.model
    model.train()

    def loss_and_grads(loss_fn: Any) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        loss = loss_fn(model, batches[0])
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    skipped = loss_and_grads(trainer._compute_loss)
    full = loss_and_grads(lambda m, x: GRPOTrainer._compute_loss(trainer, m, x))
    assert forwarded[1:] == [4, 8]
    assert skipped[0] == pytest.approx(full[0], rel=1e-5, abs=1e-7)
    assert skipped[1].keys() == full[1].keys() and len(full[1]) > 0
    for name, grad in full[1].items():
        torch.testing.assert_close(skipped[1][name], grad, rtol=1e-4, atol=1e-7, msg=name)
    assert max(g.abs().max().item() for g in full[1].values()) > 0  # a gradient that could differ


def test_pad_rows_gives_every_process_the_same_row_count() -> None:
    live = torch.tensor([1, 4])  # rows with a loss token on this process; the most any process kept: 4
    assert pad_rows(live, 6, 4).tolist() == [0, 1, 2, 4]  # two masked rows join, order kept
    assert pad_rows(live, 6, 2).tolist() == [1, 4]  # this process already keeps the most
    assert pad_rows(live, 6, 6) is None and pad_rows(None, 6, 3) is None  # another process keeps all
