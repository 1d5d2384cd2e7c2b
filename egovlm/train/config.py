"""Training recipes: a dataclass tree loaded from YAML, with dotted ``key=value`` overrides.

A recipe has seven sections::

    run:     where the run lives and on which device
    model:   checkpoint (local folder or hub id), dtype, 4-bit loading, vision freezing
    lora:    LoRA adapter (off = full fine-tuning)
    data:    JSONL dataset, frames per prompt, frame sampling, EgoSynth generation
    rewards: reward weights and shaping (the formulas live in egovlm.train.rewards)
    rollouts: per-rollout option shuffles, masking of uniform groups (egovlm.train.rollouts)
    grpo:    passed verbatim to TRL's GRPOConfig (any of its fields; unknown names are errors)

Relative paths are relative to the working directory, like every TRL/transformers recipe.
Overrides use the same tree: ``grpo.max_steps=20 model.path=/ckpt data.frames=16``; the value is
parsed as YAML (``true``, ``1e-5``, ``[a, b]``). Every unknown key, in the file or in an
override, raises :class:`ConfigError` naming the key and where it came from (the reading, the
overrides and the messages are :mod:`egovlm.config`'s, shared by every config of the project).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

import egovlm.config as shared
from egovlm.choice import ANSWER_RULES
from egovlm.train.rewards import PRIORS_WITH_DATA
from egovlm.train.rollouts import CITATION_CREDITS

STRICT = ConfigDict(extra="forbid", validate_assignment=True)

# GRPOConfig fields this tree sets itself: a recipe must set them in the named section instead.
OWNED_GRPO_KEYS = {
    "output_dir": "run.output_dir",
    "reward_weights": "rewards.weights",
    "use_cpu": "run.device",
    "remove_unused_columns": "(always false: the rewards read the dataset's columns)",
}
# Keys TRL removed or never had, with the hint users need.
REMOVED_GRPO_KEYS = {
    "max_prompt_length": "TRL 1.x removed it; prompts are never truncated (a cut would drop frames)",
    "warmup_ratio": "transformers 5 removed it; use grpo.warmup_steps (below 1: a fraction of the run)",
}


class ConfigError(shared.ConfigError):
    """A recipe that cannot be used; the message names the key and the file (or override)."""


@dataclass(config=STRICT)
class RunSection:
    output_dir: str
    device: Literal["auto", "cpu", "cuda"] = "auto"
    resume: bool = True  # continue from the last checkpoint in output_dir when one exists
    plot: bool = True  # write curves.png at the end of the run


@dataclass(config=STRICT)
class ModelSection:
    path: str  # local folder or hub id
    build_if_missing: Literal["tiny", "nano", "small"] | None = None  # offline egovlm.models.build_model
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    attn_implementation: str | None = None  # e.g. "flash_attention_2", "sdpa"
    load_in_4bit: bool = False  # QLoRA: bitsandbytes NF4 base weights (needs CUDA and lora.enabled)
    freeze_vision: bool = False  # freeze model.visual (the ViT and merger) during full fine-tuning


@dataclass(config=STRICT)
class LoraSection:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # Language-model projections only by default: the vision MLP reuses the names gate/up/down_proj.
    target_modules: str | list[str] = (
        r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    )
    modules_to_save: list[str] | None = None


@dataclass(config=STRICT)
class SynthSection:
    """Generate EgoSynth into the folder of ``data.train`` (which must be named qa.jsonl) when
    that file does not exist yet; the same as ``egovlm data synth --out <folder> …``."""

    clips: int = 32
    seed: int = 0
    split: Literal["train", "test", "val"] = "train"
    width: int = 640
    height: int = 480
    fps: float = 30.0
    duration_s: float = 30.0


@dataclass(config=STRICT)
class DataSection:
    train: str  # JSONL in the common schema (egovlm.schema)
    frames: int = 8  # frames per prompt
    sampling: Literal["uniform", "salient"] = "uniform"
    cache_dir: str | None = None  # decoded frames; default <run.output_dir>/frame_cache
    max_items: int | None = None
    selector_k: int = 2  # salient frames picked by the keyframe selector when rows have no salient_times
    selector: dict[str, Any] | None = None  # egovlm.keyframes.SelectorParams fields (the edge's thresholds)
    synth: SynthSection | None = None


@dataclass(config=STRICT)
class RewardWeights:
    format: float = 0.5
    accuracy: float = 1.0
    keyframe: float = 0.5
    length: float = 0.0


@dataclass(config=STRICT)
class RewardsSection:
    weights: RewardWeights = dataclasses.field(default_factory=RewardWeights)
    format_partial: float = 0.5  # credit for a completion with all blocks but not the exact grammar
    format_tag_share: float = 0.5  # share of that partial credit paid for tags alone (0: valid blocks only)
    keyframe_tolerance_s: float | None = None  # None: each salient time maps to its nearest frame
    keyframe_requires_correct: bool = False  # pay the keyframe reward only with a correct answer
    # The keyframe reward's definition (egovlm.train.rewards module docstring); the defaults are plain F1.
    keyframe_beta: float = 1.0  # F-beta; < 1 weights precision (over-citing costs more)
    keyframe_max_cited: int | None = None  # citing more frames than this scores 0
    keyframe_prior: Literal["none", "cite_all", "positional", "expected"] = "none"  # content-free baseline
    keyframe_prior_data: str | None = None  # JSONL positional/expected are estimated from (None: data.train)
    max_tokens: int | None = None  # length shaping (DAPO soft overlong): hard limit in tokens
    length_buffer_tokens: int = 64  # the penalty ramps from 0 to -1 over this many tokens


@dataclass(config=STRICT)
class RolloutsSection:
    """How a question's rollouts are built and which groups reach the loss (:mod:`egovlm.train.rollouts`).
    How many questions a step sees and how often each is used are TRL's: ``grpo.per_device_train_batch_size``
    / ``grpo.num_generations`` questions per generation batch (per process), ``grpo.num_train_epochs`` (or
    ``max_steps``) passes with fresh rollouts, ``grpo.num_iterations`` updates on the same rollouts."""

    shuffle_options: bool = False  # each rollout sees its own permutation of the option texts
    # options: a multiple-choice rollout's <answer> may only be an option's text or letter (egovlm.choice,
    # the rule eval and the device answer under); free: whatever the policy samples. transformers rollouts
    # only (vLLM's sampling has no per-prompt rule here).
    answers: str = "options"
    drop_uniform_groups: bool = False  # DAPO dynamic sampling, masked not resampled: no loss from a group
    # whose rewards are all equal (their fraction is logged either way, as uniform_group_fraction)
    # epsilon: inside <keyframes>, each cited frame number is drawn uniformly with this probability
    # (egovlm.train.rollouts.CitationExplorer), so a group's citations differ and the keyframe reward
    # has something to pay; 0: the policy's own citations. transformers rollouts only.
    explore_citations: float = 0.0
    # shared: every token of a completion gets TRL's one advantage (all rewards summed); keyframe: the
    # <keyframes> block's tokens get the keyframe reward's own group advantage, the others that of the
    # remaining rewards (egovlm.train.rollouts.split_advantages), so a citation is credited by what it cites
    citation_credit: str = "shared"


@dataclass(config=STRICT)
class TrainConfig:
    run: RunSection
    model: ModelSection
    data: DataSection
    lora: LoraSection = dataclasses.field(default_factory=LoraSection)
    rewards: RewardsSection = dataclasses.field(default_factory=RewardsSection)
    rollouts: RolloutsSection = dataclasses.field(default_factory=RolloutsSection)
    grpo: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = "<defaults>"  # the file it came from (set by load_config)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}


def _grpo_fields() -> dict[str, str]:
    """GRPOConfig field name → its annotation as text."""
    from trl import GRPOConfig  # heavy (imports transformers): only when a config is validated

    return {f.name: str(f.type) for f in dataclasses.fields(GRPOConfig)}


def _coerce(value: Any, annotation: str) -> Any:
    """YAML reads ``1e-5`` (no dot) as a string and ``no`` as False; TrainingArguments would
    convert neither back (``save_strategy: no`` must stay the string "no")."""
    if isinstance(value, bool) and "bool" not in annotation:
        return "yes" if value else "no"
    if not isinstance(value, str):
        return value
    for name, kind in (("int", int), ("float", float)):
        if name in annotation:
            try:
                return kind(value)
            except ValueError:
                continue
    return value


def check_grpo_keys(grpo: dict[str, Any], sources: shared.Sources) -> dict[str, Any]:
    """Reject unknown, owned and removed keys; return the section with numbers coerced."""
    known = _grpo_fields()
    out = {}
    for key, value in grpo.items():
        origin = sources.origin(f"grpo.{key}")
        if key in OWNED_GRPO_KEYS:
            raise ConfigError(f"{origin}: grpo.{key} is set by this tree; use {OWNED_GRPO_KEYS[key]}")
        if key in REMOVED_GRPO_KEYS:
            raise ConfigError(f"{origin}: grpo.{key}: {REMOVED_GRPO_KEYS[key]}")
        if key not in known:
            raise ConfigError(f"{origin}: unknown key grpo.{key} (not a field of trl.GRPOConfig)")
        out[key] = _coerce(value, known[key])
    return out


def load_config(path: Path | str, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML recipe, apply dotted overrides, validate the whole tree (see module docstring)."""
    tree, sources = shared.read(path, overrides, ConfigError)
    cfg = shared.validate(tree, TrainConfig, sources, ConfigError)
    cfg.grpo = check_grpo_keys(cfg.grpo, sources)
    cfg.source = sources.file
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Cross-field rules that types cannot express. Errors name the key and the file."""
    src = cfg.source
    w = cfg.rewards.weights
    for name in ("format", "accuracy", "keyframe", "length"):
        if getattr(w, name) < 0:
            raise ConfigError(f"{src}: rewards.weights.{name} must be >= 0, got {getattr(w, name)}")
    if w.accuracy <= 0:
        raise ConfigError(f"{src}: rewards.weights.accuracy must be > 0 (the task is answering)")
    if w.keyframe > w.accuracy:
        raise ConfigError(
            f"{src}: rewards.weights.keyframe ({w.keyframe}) exceeds rewards.weights.accuracy "
            f"({w.accuracy}): citing frames must never pay more than a correct answer"
        )
    if not 0.0 <= cfg.rewards.format_tag_share <= 1.0:
        raise ConfigError(
            f"{src}: rewards.format_tag_share must be in [0, 1], got {cfg.rewards.format_tag_share}"
        )
    if not 0.0 <= cfg.rewards.format_partial <= 1.0:
        raise ConfigError(
            f"{src}: rewards.format_partial must be in [0, 1], got {cfg.rewards.format_partial}"
        )
    check_keyframe(cfg)
    if cfg.rollouts.answers not in ANSWER_RULES:
        raise ConfigError(
            f"{src}: rollouts.answers must be {' or '.join(ANSWER_RULES)}, got {cfg.rollouts.answers!r}"
        )
    if not 0.0 <= cfg.rollouts.explore_citations <= 1.0:
        raise ConfigError(
            f"{src}: rollouts.explore_citations must be in [0, 1] (the share of cited frame numbers drawn at "
            f"random), got {cfg.rollouts.explore_citations}"
        )
    if cfg.rollouts.citation_credit not in CITATION_CREDITS:
        raise ConfigError(
            f"{src}: rollouts.citation_credit must be {' or '.join(CITATION_CREDITS)}, "
            f"got {cfg.rollouts.citation_credit!r}"
        )
    if cfg.rollouts.citation_credit == "keyframe":
        if w.keyframe <= 0:
            raise ConfigError(
                f"{src}: rollouts.citation_credit: keyframe credits citations by the keyframe reward, which "
                "rewards.weights.keyframe = 0 switches off; set a keyframe weight or citation_credit: shared"
            )
        if cfg.grpo.get("multi_objective_aggregation", "sum_then_normalize") != "sum_then_normalize":
            raise ConfigError(
                f"{src}: rollouts.citation_credit: keyframe normalises as TRL's sum_then_normalize; "
                "remove grpo.multi_objective_aggregation or set citation_credit: shared"
            )
    for engine in ("use_vllm", "use_transformers_continuous_batching"):
        if cfg.rollouts.explore_citations > 0 and cfg.grpo.get(engine):
            raise ConfigError(
                f"{src}: rollouts.explore_citations acts inside transformers' generate, not with "
                f"grpo.{engine}: set rollouts.explore_citations=0 with grpo.{engine}=true"
            )
        if cfg.rollouts.answers == "options" and cfg.grpo.get(engine):
            raise ConfigError(
                f"{src}: rollouts.answers: options restricts answers inside transformers' generate, not with "
                f"grpo.{engine}: set rollouts.answers=free with grpo.{engine}=true (answers then go "
                "unrestricted in training)"
            )
    if w.length > 0 and cfg.rewards.max_tokens is None:
        raise ConfigError(f"{src}: rewards.weights.length > 0 needs rewards.max_tokens")
    if (
        cfg.rewards.max_tokens is not None
        and not 0 < cfg.rewards.length_buffer_tokens <= cfg.rewards.max_tokens
    ):
        raise ConfigError(f"{src}: rewards.length_buffer_tokens must be in (0, rewards.max_tokens]")
    if cfg.data.synth is not None and Path(cfg.data.train).name != "qa.jsonl":
        raise ConfigError(f"{src}: data.synth writes <folder>/qa.jsonl, so data.train must end in qa.jsonl")
    if cfg.data.frames < 1:
        raise ConfigError(f"{src}: data.frames must be >= 1, got {cfg.data.frames}")
    if cfg.model.load_in_4bit and not cfg.lora.enabled:
        raise ConfigError(
            f"{src}: model.load_in_4bit needs lora.enabled: true (4-bit weights cannot be trained)"
        )
    check_batch(cfg, num_processes=1)


def check_keyframe(cfg: TrainConfig) -> None:
    """The keyframe reward's knobs; a positional prior without its own data reads ``data.train``."""
    r, src = cfg.rewards, cfg.source
    if not r.keyframe_beta > 0:
        raise ConfigError(
            f"{src}: rewards.keyframe_beta must be > 0 (0.5 weights precision), got {r.keyframe_beta}"
        )
    if r.keyframe_max_cited is not None and r.keyframe_max_cited < 1:
        raise ConfigError(
            f"{src}: rewards.keyframe_max_cited must be >= 1 or null (no cap), got {r.keyframe_max_cited}"
        )
    if r.keyframe_prior_data is not None and r.keyframe_prior not in PRIORS_WITH_DATA:
        raise ConfigError(
            f"{src}: rewards.keyframe_prior_data is only read with rewards.keyframe_prior: "
            f"{' or '.join(PRIORS_WITH_DATA)} (got {r.keyframe_prior!r}); remove it or set the prior"
        )
    if r.keyframe_prior in PRIORS_WITH_DATA and r.keyframe_prior_data is None:
        r.keyframe_prior_data = cfg.data.train


def grpo_default(name: str) -> Any:
    """TRL's GRPOConfig default for a field (what a recipe that leaves the key out trains with)."""
    from trl import GRPOConfig

    for f in dataclasses.fields(GRPOConfig):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise ConfigError(f"trl.GRPOConfig.{name} has no default")
    raise ConfigError(f"unknown key grpo.{name} (not a field of trl.GRPOConfig)")


def generation_batch(grpo: dict[str, Any], num_processes: int) -> tuple[int, int]:
    """(generation batch, num_generations) the way TRL derives them (see GRPOConfig.__post_init__)."""
    per_device = int(grpo.get("per_device_train_batch_size", 8))
    g = int(grpo.get("num_generations", 8))
    if grpo.get("generation_batch_size") is not None:
        return int(grpo["generation_batch_size"]), g
    steps = grpo.get("steps_per_generation") or grpo.get("gradient_accumulation_steps", 1)
    return per_device * num_processes * int(steps), g


def check_batch(cfg: TrainConfig, num_processes: int) -> None:
    """The batch arithmetic TRL checks later (or not at all), explained in the recipe's terms.

    A generation batch is ``per_device_train_batch_size x processes x steps_per_generation``
    completions, made of whole groups of ``num_generations`` rollouts of one question each; so
    ``per_device_train_batch_size: 32, num_generations: 8`` is 4 questions per step on one process."""
    src = cfg.source
    if cfg.grpo.get("generation_batch_size") is not None and cfg.grpo.get("steps_per_generation") is not None:
        raise ConfigError(
            f"{src}: set grpo.generation_batch_size or grpo.steps_per_generation, not both "
            "(TRL derives each from the other and refuses the pair)"
        )
    batch, g = generation_batch(cfg.grpo, num_processes)
    per_step = int(cfg.grpo.get("per_device_train_batch_size", 8)) * num_processes
    if cfg.grpo.get("generation_batch_size") is not None and batch % per_step:
        raise ConfigError(
            f"{cfg.source}: grpo.generation_batch_size ({batch}) must be divisible by the global batch "
            f"(per_device_train_batch_size x {num_processes} process(es) = {per_step})"
        )
    if g < 2:
        raise ConfigError(f"{cfg.source}: grpo.num_generations must be >= 2 (GRPO compares a group), got {g}")
    if batch % g:
        raise ConfigError(
            f"{cfg.source}: the generation batch ({batch} = per_device_train_batch_size x {num_processes} "
            f"process(es) x steps_per_generation) must be divisible by grpo.num_generations ({g}): it holds "
            f"whole groups, one question's {g} rollouts each (e.g. per_device_train_batch_size: {4 * g} is 4 "
            "questions per step)"
        )
    iterations = cfg.grpo.get("num_iterations", 1)
    if int(iterations) < 1:
        raise ConfigError(
            f"{src}: grpo.num_iterations must be >= 1 (policy updates per generation batch; 1 = on-policy), "
            f"got {iterations}; to use each question more than once with fresh rollouts raise "
            "grpo.num_train_epochs (or grpo.max_steps) instead"
        )
    if cfg.rollouts.drop_uniform_groups and batch // g < 2:
        raise ConfigError(
            f"{src}: rollouts.drop_uniform_groups with one question per generation batch ({batch} "
            f"completions = one group of grpo.num_generations {g}): whenever that group's rewards are all "
            "equal the step trains on nothing. Raise grpo.per_device_train_batch_size (or "
            f"steps_per_generation) to a multiple of {g} that holds several questions, or turn it off"
        )
