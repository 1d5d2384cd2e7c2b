"""Recipes: every shipped config validates (ours and TRL's rules), overrides work, and every
mistake is reported with the key and the file it came from."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from egovlm.train.config import ConfigError, load_config
from egovlm.train.rewards import build_rewards
from egovlm.train.trainer import grpo_args

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "configs").glob("*.yaml"))
ACCELERATE = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


def test_the_expected_recipes_ship() -> None:
    names = {p.name for p in RECIPES}
    assert {"egovlm_3b.yaml", "egovlm_3b_qlora.yaml", "tiny_cpu.yaml"} <= names
    assert {p.name for p in ACCELERATE} >= {
        "single_gpu.yaml",
        "zero2_8gpu.yaml",
        "zero3_8gpu.yaml",
        "multinode_zero3.yaml",
    }


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_validates_and_builds_a_grpo_config(recipe: Path, tmp_path: Path) -> None:
    cfg = load_config(recipe, [f"run.output_dir={tmp_path}"])
    _, weights = build_rewards(cfg.rewards)
    # TRL's own checks (batch divisibility, generation settings...) on this CPU-only machine.
    args = grpo_args(cfg, "cpu", weights)
    assert args.num_generations == cfg.grpo.get("num_generations", 8)
    assert args.generation_batch_size % args.num_generations == 0
    assert args.reward_weights == weights
    assert args.remove_unused_columns is False


def test_paper_recipe_settings() -> None:
    cfg = load_config(REPO / "configs" / "egovlm_3b.yaml")
    assert cfg.model.path == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert cfg.grpo["num_generations"] == 8
    assert cfg.grpo["bf16"] is True and cfg.grpo["gradient_checkpointing"] is True
    qlora = load_config(REPO / "configs" / "egovlm_3b_qlora.yaml")
    assert qlora.model.load_in_4bit and qlora.lora.enabled


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_configs_load_with_accelerate(path: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(path))  # rejects unknown keys
    assert cfg.num_processes >= 1
    if cfg.deepspeed_config:
        assert cfg.deepspeed_config["zero_stage"] in (2, 3)


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


BASE: dict[str, dict[str, Any]] = {
    "run": {"output_dir": "runs/x", "device": "cpu"},
    "model": {"path": "runs/m", "build_if_missing": "tiny"},
    "data": {"train": "d/qa.jsonl"},
    "grpo": {"per_device_train_batch_size": 4, "num_generations": 4},
}


def variant(**sections: dict[str, Any]) -> dict[str, Any]:
    tree = {k: dict(v) for k, v in BASE.items()}
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return tree


def test_overrides_are_typed_and_dotted(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    cfg = load_config(
        path,
        ["grpo.max_steps=7", "grpo.learning_rate=3e-4", "data.frames=6", "rewards.weights.keyframe=0.25"],
    )
    assert cfg.grpo["max_steps"] == 7
    assert cfg.grpo["learning_rate"] == pytest.approx(3e-4)  # YAML reads 3e-4 as text; coerced
    assert cfg.data.frames == 6
    assert cfg.rewards.weights.keyframe == 0.25
    assert cfg.source == str(path)


@pytest.mark.parametrize(
    ("tree", "overrides", "needle"),
    [
        (variant(model={"pth": "x"}), [], "model.pth: unknown key"),
        (variant(grpo={"learning_rat": 1e-5}), [], "unknown key grpo.learning_rat"),
        (variant(grpo={"max_prompt_length": 512}), [], "TRL 1.x removed it"),
        (variant(grpo={"output_dir": "elsewhere"}), [], "use run.output_dir"),
        (variant(rewards={"weights": {"keyframe": 2.0}}), [], "must never pay more than a correct answer"),
        (variant(grpo={"per_device_train_batch_size": 3}), [], "must be divisible by grpo.num_generations"),
        (
            variant(grpo={"num_generations": 1, "per_device_train_batch_size": 1}),
            [],
            "num_generations must be >= 2",
        ),
        (variant(model={"load_in_4bit": True}), [], "needs lora.enabled"),
        (variant(data={"sampling": "random"}), [], "data.sampling"),
        ({k: v for k, v in BASE.items() if k != "data"}, [], "data: missing required key"),
        (BASE, ["data.frame=3"], "override 'data.frame=3'"),
        (BASE, ["grpo.bogus=1"], "override 'grpo.bogus=1'"),
        (BASE, ["frames"], "must look like key=value"),
    ],
)
def test_mistakes_name_the_key_and_the_source(
    tmp_path: Path, tree: dict, overrides: list[str], needle: str
) -> None:
    path = write(tmp_path, tree)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_override_key_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.frame: unknown key"):
        load_config(write(tmp_path, BASE), ["data.frame=3"])


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_saved_tree_round_trips(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml")
    again = write(tmp_path, cfg.to_dict())
    assert dataclasses.asdict(load_config(again)) | {"source": ""} == dataclasses.asdict(cfg) | {"source": ""}


THREE_B = [REPO / "configs" / "egovlm_3b.yaml", REPO / "configs" / "egovlm_3b_qlora.yaml"]


def grpo_lines(text: str) -> dict[str, tuple[str, str]]:
    """Each key of the recipe's top-level ``grpo:`` section → (its line, the comment lines just above it
    at the key's indentation; deeper-indented comment lines continue the previous key's comment)."""
    lines = text.splitlines()
    start = lines.index("grpo:")
    out: dict[str, tuple[str, str]] = {}
    above: list[str] = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        stripped = line.strip()
        if stripped.startswith("#"):
            above = [*above, stripped] if line.startswith("  #") else []
            continue
        if not stripped:
            above = []
            continue
        if line.startswith("  ") and not line.startswith("   ") and ":" in stripped:
            out[stripped.split(":", 1)[0]] = (line, "\n".join(above))
            above = []
    return out


@pytest.mark.parametrize("recipe", THREE_B, ids=lambda p: p.name)
def test_every_grpo_value_that_differs_from_trl_says_why(recipe: Path) -> None:
    """A hyper-parameter changed from TRL's GRPOConfig default without a reason fails here: the key's
    line (or the comment just above it) must carry a comment naming the default."""
    from egovlm.train.config import grpo_default

    grpo = yaml.safe_load(recipe.read_text())["grpo"]
    lines = grpo_lines(recipe.read_text())
    assert set(lines) == set(grpo)
    unexplained = []
    for key, value in grpo.items():
        default = grpo_default(key)
        if value == default:
            continue
        line, above = lines[key]
        comment = line.split("#", 1)[1] if "#" in line else above
        if "default" not in comment:
            unexplained.append(f"{key}: {value!r} (TRL default {default!r})")
    assert not unexplained, f"{recipe.name}: say why these differ from TRL's defaults: {unexplained}"


def test_grpo_lines_notices_a_missing_reason(tmp_path: Path) -> None:
    text = (
        "grpo:\n  seed: 1   # default 42: ours\n               # default is continued here\n"
        "  beta: 0.04\n  # default 0.0: a reason above the key\n  logging_steps: 1\n"
    )
    lines = grpo_lines(text)
    assert lines["beta"] == ("  beta: 0.04", "")  # the continuation above belongs to seed
    assert lines["logging_steps"][1] == "# default 0.0: a reason above the key"


@pytest.mark.parametrize("recipe", THREE_B, ids=lambda p: p.name)
def test_3b_recipes_adopt_the_keyframe_reward_that_must_look(recipe: Path) -> None:
    cfg = load_config(recipe)
    r = cfg.rewards
    assert r.keyframe_requires_correct and r.keyframe_beta < 1 and r.keyframe_prior == "positional"
    assert r.keyframe_max_cited is not None and r.keyframe_max_cited < cfg.data.frames
    assert r.keyframe_prior_data == cfg.data.train  # the prior is estimated on the training set


@pytest.mark.parametrize(
    ("rewards", "needle"),
    [
        ({"keyframe_beta": 0}, "keyframe_beta must be > 0"),
        ({"keyframe_max_cited": 0}, "keyframe_max_cited must be >= 1"),
        ({"keyframe_prior": "uniform"}, "rewards.keyframe_prior"),
        ({"keyframe_prior_data": "x.jsonl"}, "only read with rewards.keyframe_prior: positional or expected"),
    ],
)
def test_keyframe_reward_settings_are_checked(tmp_path: Path, rewards: dict, needle: str) -> None:
    path = write(tmp_path, variant(rewards=rewards))
    with pytest.raises(ConfigError, match=needle) as err:
        load_config(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("prior", ["positional", "expected"])
def test_prior_data_defaults_to_the_training_set(tmp_path: Path, prior: str) -> None:
    cfg = load_config(write(tmp_path, variant(rewards={"keyframe_prior": prior})))
    assert cfg.rewards.keyframe_prior_data == "d/qa.jsonl"
    other = load_config(
        write(tmp_path, variant(rewards={"keyframe_prior": prior, "keyframe_prior_data": "p.jsonl"}))
    )
    assert other.rewards.keyframe_prior_data == "p.jsonl"
