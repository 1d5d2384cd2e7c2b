"""GRPO training on TRL's GRPOTrainer: recipe → model, dataset, rewards → checkpoints and logs.

What this module adds to TRL, and why:

* Frames enter as the ``images`` column with contract prompts (docs/architecture.md#the-contract): TRL's
  video path is not wired into the loss, its image path is (docs/architecture.md#dependency-facts;
  ``tests/train/test_grad.py`` shows the vision tower receives gradient from a GRPO step).
* ``EgoGRPOTrainer`` is the only subclass; the loss is TRL's, untouched. Around generation: the
  recipe's ``rollouts`` switches (:mod:`egovlm.train.rollouts`:
  each rollout's own permutation of the options, uniform groups counted and optionally masked out
  of the loss), and a record of which dataset rows (and option orders) each generation batch used
  in ``data_order.jsonl`` (so a resumed run can be checked against an uninterrupted one). Around
  the rewards: the per-group uniformity those switches need. Around the loss: rows whose loss mask
  is empty are left out of its forward and backward (exact for TRL's token-normalised losses, see
  :mod:`egovlm.train.rollouts`). And resuming a full fine-tune
  actually restores the weights (:func:`restore_full_weights`: transformers 5.23 silently skips
  them for Qwen2.5-VL).
* Resume: a restarted run with the same command continues from the last ``checkpoint-N`` in the
  run folder (transformers restores optimizer, scheduler, RNG and the sampler position).
* TensorBoard logs go to ``<run>/tensorboard`` (a fixed folder, so a resumed run appends to
  the same curves); ``curves.png`` is drawn at the end (:mod:`egovlm.train.plot`).
* Distributed launches (``accelerate launch``): the trainer never decodes video. The frames come
  from ``egovlm data prepare`` (:mod:`egovlm.train.prepare`), run before the launch; an unprepared
  dataset is refused with that command. Only a single-process run of a recipe with a
  ``data.synth`` block (the CPU demo) prepares itself, because one process has nobody waiting on
  it. The model is loaded by every rank outside ``main_process_first`` (ZeRO-3's
  ``zero3_init_flag`` makes ``from_pretrained`` a collective). ``data_order.jsonl`` records each
  generation batch's row ids per rank, ``run.json`` the world size, and each rank writes
  ``ranks/rank-<i>.json``: its rank, backend and a SHA-256 of its final parameters (equal on
  every rank when the replicas agree).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from egovlm.atomic import atomic_write_text, replace_dir
from egovlm.config import read_yaml
from egovlm.train import preflight
from egovlm.train.config import ConfigError, RolloutsSection, TrainConfig
from egovlm.train.generation import suppress_vision_tokens
from egovlm.train.rewards import build_rewards

if TYPE_CHECKING:
    from egovlm.train.dataset import FrameSpec

log = logging.getLogger("egovlm.train")

DATA_ORDER = "data_order.jsonl"
RANKS_DIR = "ranks"
TENSORBOARD_DIR = "tensorboard"
FINAL_DIR = "final"


@dataclass
class RunResult:
    run_dir: Path
    final_dir: Path
    global_step: int
    resumed_from: str | None
    step_time_s: float | None  # median of TRL's per-step wall time
    train_items: int
    world_size: int  # processes that trained (accelerate's num_processes)


def ensure_model(cfg: TrainConfig) -> str:
    """The model to load: an existing folder, a hub id, or an offline model built now."""
    path = Path(cfg.model.path).expanduser()
    if not path.exists() and cfg.model.build_if_missing is not None:
        from egovlm.models.build import build_model

        log.info("building offline %s model in %s", cfg.model.build_if_missing, path)
        build_model(cfg.model.build_if_missing, path, seed=int(cfg.grpo.get("seed", 42)))
    return str(path.resolve()) if path.exists() else cfg.model.path


def ensure_data(cfg: TrainConfig) -> Path:
    """The training JSONL; generated with EgoSynth into its folder when missing and configured."""
    path = Path(cfg.data.train)
    if path.is_file() or cfg.data.synth is None:
        return path
    from egovlm.synth.generate import SynthConfig, synthesize

    syn = cfg.data.synth
    log.info("generating EgoSynth (%d %s clips, seed %d) in %s", syn.clips, syn.split, syn.seed, path.parent)
    look = SynthConfig(size=(syn.width, syn.height), fps=syn.fps, duration=syn.duration_s)
    synthesize(path.parent, syn.clips, syn.seed, syn.split, look)
    return path


def torch_dtype(name: str, device: str) -> Any:
    import torch

    if device == "cpu":
        return torch.float32  # CPU training runs in fp32 (TRL: use_cpu=True, bf16=False)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_policy(cfg: TrainConfig, model_id: str, device: str) -> tuple[Any, Any, tuple[int, int]]:
    """Model, processor and keyframe size. Loaded with ``from_pretrained(folder or hub id)`` so
    TRL can re-create the reference model from ``_name_or_path`` when beta > 0."""
    import os

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from egovlm.models.files import keyframe_size_of

    kwargs: dict[str, Any] = {"dtype": torch_dtype(cfg.model.dtype, device), "use_safetensors": True}
    if cfg.model.attn_implementation:
        kwargs["attn_implementation"] = cfg.model.attn_implementation
    if cfg.model.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
        )
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    processor = AutoProcessor.from_pretrained(model_id, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(model_id, **kwargs)
    if cfg.model.freeze_vision:
        for p in vision_tower(model).parameters():
            p.requires_grad_(False)
    return model, processor, keyframe_size_of(model_id)


def vision_tower(model: Any) -> Any:
    """Qwen2.5-VL's ViT + merger (``model.model.visual`` in transformers 5, ``model.visual`` before),
    through a PEFT wrapper if there is one."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    inner = getattr(model, "model", None)
    for owner in (inner, model):
        if owner is not None and hasattr(owner, "visual"):
            return owner.visual
    raise AttributeError(f"{type(model).__name__} has no vision tower (.visual)")


def peft_config(cfg: TrainConfig) -> Any:
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        modules_to_save=cfg.lora.modules_to_save,
        task_type="CAUSAL_LM",
    )


def grpo_args(cfg: TrainConfig, device: str, reward_weights: list[float]) -> Any:
    from trl import GRPOConfig

    kwargs = dict(cfg.grpo)
    report = kwargs.pop("report_to", None)
    report = [report] if isinstance(report, str) else list(report or [])
    kwargs["report_to"] = [r for r in report if r not in ("tensorboard", "none", "all")] or "none"
    kwargs.setdefault("logging_steps", 1)
    kwargs.setdefault("save_strategy", "steps")
    if device == "cpu":
        kwargs.update(use_cpu=True, bf16=False, fp16=False)
    return GRPOConfig(
        output_dir=cfg.run.output_dir, reward_weights=reward_weights, remove_unused_columns=False, **kwargs
    )


def restore_full_weights(model: Any, checkpoint: Path) -> None:
    """Load a full-weights checkpoint into ``model`` through ``from_pretrained``, strictly.

    transformers 5 saves Qwen2.5-VL checkpoints in the original key layout (``model.layers.*``,
    ``visual.*``) but ``Trainer._load_from_checkpoint`` loads them with a *non-strict*
    ``load_state_dict`` into the new layout (``model.language_model.*``, ``model.visual.*``):
    nothing matches, a warning is logged, and the "resumed" run silently restarts from the base
    weights (huggingface/transformers#43701, still open in 5.23). ``from_pretrained`` applies
    the key conversion; the strict copy fails loudly if anything is still missing."""
    fresh = type(model).from_pretrained(str(checkpoint), dtype=model.dtype, use_safetensors=True)
    model.load_state_dict(fresh.state_dict(), strict=True)
    del fresh


def _trainer_class() -> type:
    from trl import GRPOTrainer

    class EgoGRPOTrainer(GRPOTrainer):
        """TRL's GRPOTrainer plus the recipe's rollout switches, a record of the data order and a
        correct resume of full weights (see module docstring and :func:`restore_full_weights`)."""

        def __init__(self, *args: Any, rollouts: RolloutsSection | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.rollouts = rollouts or RolloutsSection()
            self._uniform_completions: Any = None  # per completion of the last scored batch (all processes)
            self._row_options: list[dict[str, str] | None] | None = None  # the batch being generated
            self._row_frames: list[int] | None = None  # its frame counts, for citation exploration
            self._scored_rewards: Any = None  # TRL's rewards per function of the last scored batch

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            from accelerate.utils import is_peft_model

            target = model if model is not None else self.model
            ckpt = Path(resume_from_checkpoint)
            full = (ckpt / "model.safetensors").is_file() or (ckpt / "model.safetensors.index.json").is_file()
            if not full or is_peft_model(target) or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                super()._load_from_checkpoint(resume_from_checkpoint, model)  # adapters, sharded engines
                return
            restore_full_weights(target, ckpt)

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> Any:
            from egovlm.train.dataset import row_options
            from egovlm.train.rollouts import drop_completions, shuffle_batch

            training = self.model.training
            offset = self.accelerator.process_index * len(inputs)  # TRL's process_slice
            orders = None
            if training and self.rollouts.shuffle_options:
                step = int(self.state.global_step)
                inputs, orders = shuffle_batch(inputs, self.num_generations, self.args.seed, step, offset)
            if training:
                record_data_order(self, [x.get("id") for x in inputs], orders)
            if self.rollouts.answers == "options":
                self._row_options = [row_options(x.get("letters"), x.get("option_texts")) for x in inputs]
            if training and self.rollouts.explore_citations:
                self._row_frames = [len(x.get("frame_times") or []) for x in inputs]
            try:
                output = super()._generate_and_score_completions(inputs)
            finally:
                self._row_options = self._row_frames = None
            if training and self.rollouts.citation_credit == "keyframe":
                self._credit_citations(output, offset, len(inputs))
            if training and self.rollouts.drop_uniform_groups:
                drop = self._uniform_completions[offset : offset + len(inputs)]
                drop_completions(output, drop.to(output["completion_mask"].device), self.accelerator.gather)
            return output

        def _credit_citations(self, output: dict[str, Any], offset: int, rows: int) -> None:
            """``rollouts.citation_credit: keyframe``: this process's advantages become per token, the
            ``<keyframes>`` block's tokens credited by the keyframe reward alone and the others by the
            remaining rewards (:func:`egovlm.train.rollouts.split_advantages`), in place."""
            import torch

            from egovlm.train.rollouts import CREDITED_METRIC, citation_token_mask, split_advantages

            if "keyframe" not in self.reward_func_names:
                raise RuntimeError(
                    f"rollouts.citation_credit: keyframe needs a reward named 'keyframe'; this trainer's "
                    f"rewards are {self.reward_func_names}"
                )
            keyframe = self.reward_func_names.index("keyframe")
            rewards = self._scored_rewards
            answer, cite = split_advantages(
                rewards,
                self.reward_weights.to(rewards.device),
                keyframe,
                self.num_generations,
                self.scale_rewards,
            )
            tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
            mask = citation_token_mask(tokenizer, output["completion_ids"], output["completion_mask"])
            device = output["completion_ids"].device
            answer = answer[offset : offset + rows].to(device).unsqueeze(1)
            cite = cite[offset : offset + rows].to(device).unsqueeze(1)
            output["advantages"] = torch.where(mask, cite, answer).to(output["advantages"].dtype)
            self._metrics["train"][CREDITED_METRIC].append(mask.sum().item() / max(1, rows))

        def _generate_single_turn(self, prompt_ids: Any, *args: Any, **kwargs: Any) -> Any:
            """TRL's transformers rollouts, with each multiple-choice answer restricted to its row's
            options (``rollouts.answers: options``; :mod:`egovlm.choice`) and, in training, the cited
            frames explored (``rollouts.explore_citations``; :class:`egovlm.train.rollouts.CitationExplorer`).
            TRL's generate call takes no logits processor, so the unwrapped model's ``generate`` gets
            them for this call."""
            options, frames = self._row_options, self._row_frames
            explore = self.rollouts.explore_citations if self.model.training else 0.0
            other_engine = self.use_vllm or self.use_transformers_continuous_batching
            if (options is None and not explore) or other_engine:
                return super()._generate_single_turn(prompt_ids, *args, **kwargs)
            for what, per_row in (("options", options), ("frame counts", frames)):
                if per_row is not None and len(per_row) != len(prompt_ids):
                    raise RuntimeError(
                        f"{len(prompt_ids)} prompts to generate for {len(per_row)} rows: cannot match each "
                        f"prompt with its {what}"
                    )
            from transformers import LogitsProcessorList

            from egovlm.choice import AnswerChoiceProcessor, choices_for
            from egovlm.train.rollouts import EXPLORED_METRIC, CitationExplorer

            tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
            rules: list[Any] = []
            if options is not None:
                rules.append(AnswerChoiceProcessor(choices_for(tokenizer, options)))
            explorer = None
            if explore and frames is not None:
                explorer = CitationExplorer(tokenizer, frames, explore, temperature=self.temperature)
                rules.append(explorer)
            model = self.accelerator.unwrap_model(self.model_wrapped)
            model.generate = functools.partial(model.generate, logits_processor=LogitsProcessorList(rules))
            try:
                out = super()._generate_single_turn(prompt_ids, *args, **kwargs)
            finally:
                del model.generate  # the instance attribute; the class's generate shows again
            if explorer is not None:  # citation positions where the mixture applied, per completion
                self._metrics["train"][EXPLORED_METRIC].append(explorer.explored / max(1, len(prompt_ids)))
            return out

        def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
            """TRL's loss over the rows that have a loss token: the others add exactly nothing to
            the loss types in :data:`egovlm.train.rollouts.ROW_FREE_LOSSES` (half the groups when
            uniform groups are dropped), so their forward and backward are skipped. Not with an MoE
            aux loss or an entropy mask, which read every row."""
            import torch

            from egovlm.train.rollouts import ROW_FREE_LOSSES, pad_rows, rows_with_loss, select_rows

            exact = self.loss_type in ROW_FREE_LOSSES and self.top_entropy_quantile >= 1.0
            if exact and not self.aux_loss_enabled:
                index = rows_with_loss(inputs)
                if self.accelerator.num_processes > 1:  # every process forwards as many rows
                    n = int(inputs["completion_mask"].shape[0])
                    count = n if index is None else int(index.numel())
                    kept = torch.tensor([count], device=self.accelerator.device)
                    index = pad_rows(index, n, int(self.accelerator.gather(kept).max()))
                if index is not None:
                    inputs = select_rows(inputs, index)
            return super()._compute_loss(model, inputs)

        def _calculate_rewards(
            self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any
        ) -> Any:
            from egovlm.train.rollouts import UNIFORM_METRIC, uniform_groups

            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            mode = "train" if self.model.training else "eval"
            g = self.num_generations if mode == "train" else self.num_generations_eval
            uniform = uniform_groups(rewards, self.reward_weights.to(rewards.device), g)
            self._metrics[mode][UNIFORM_METRIC].append(uniform.float().mean().item())
            self._uniform_completions = uniform.repeat_interleave(g)
            self._scored_rewards = rewards
            return rewards

    return EgoGRPOTrainer


def record_data_order(trainer: Any, ids: list[Any], orders: list[str | None] | None = None) -> None:
    """Append this generation batch's row ids to ``data_order.jsonl``: ``ids`` is the whole batch
    (rank 0's rows first); with several processes ``ranks`` holds each rank's share. ``orders``
    (with ``rollouts.shuffle_options``): per row, the original option letters shown at ``A..``
    (:func:`egovlm.train.rollouts.shuffle_batch`). Every rank calls this (it gathers from all of them)."""
    from accelerate.utils import gather_object

    line: dict[str, Any] = {"step": int(trainer.state.global_step), "ids": ids}
    if orders is not None:
        line["orders"] = orders
    if trainer.accelerator.num_processes > 1:
        shares = gather_object([(ids, orders)])  # one collective per batch for both lists
        per_rank = [r_ids for r_ids, _ in shares]
        line.update(ids=[i for r in per_rank for i in r], ranks=per_rank)
        if orders is not None:
            line["orders"] = [o for _, r_orders in shares for o in r_orders or []]
    if trainer.accelerator.is_main_process:
        with open(Path(trainer.args.output_dir) / DATA_ORDER, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def tensorboard_callback(run_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR)))


def prepared_data(cfg: TrainConfig, spec: FrameSpec, world_size: int) -> Path:
    """The training JSONL, its frames checked to be in the cache (:mod:`egovlm.train.prepare`).

    Only a single-process run of a recipe with a ``data.synth`` block (the CPU demo) generates and
    prepares its data here: one process, so nobody waits. With more processes every rank must find
    the data prepared, or all of them refuse with the ``egovlm data prepare`` command; no rank
    decodes while the others wait at a barrier."""
    from egovlm.train.prepare import check_prepared, prepare

    if cfg.data.synth is not None and world_size == 1:
        prepare(cfg, workers=1)  # small demo data: in-process (no pool start-up); skips cached rows
    data = Path(cfg.data.train)
    check_prepared(cfg, data, spec)
    return data


def build_dataset(cfg: TrainConfig, data: Path, spec: FrameSpec) -> Any:
    """The training rows, read from the prepared frame cache (never decoding)."""
    from egovlm.train.dataset import NotPreparedError, hf_dataset, read_prepared, row
    from egovlm.train.prepare import DataNotPreparedError, cache_dir_of, training_items

    cache = cache_dir_of(cfg)
    rows = []
    for item in training_items(cfg, data):  # one row's frames in memory at a time
        try:
            prepared = read_prepared(item, data.parent, spec, cache)
        except NotPreparedError as e:
            raise DataNotPreparedError(str(e), cfg.source) from e
        rows.append(row(prepared, cfg.data.selector_k, cfg.data.selector))
    return hf_dataset(rows)


def build_trainer(
    cfg: TrainConfig,
    device: str | None = None,
    callbacks: list[Any] | None = None,
    rewards: tuple[list[Any], list[float]] | None = None,
    dataset: Any | None = None,
) -> Any:
    """Everything up to (not including) ``trainer.train()``. ``rewards`` (callables, weights)
    replaces the recipe's rewards and ``dataset`` (rows with a ``prompt`` and their ``images``, as
    :func:`egovlm.train.dataset.hf_dataset` builds them) its prepared data: for experiments and tests."""
    device = device or preflight.check(cfg)
    run_dir = Path(cfg.run.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    funcs, weights = rewards or build_rewards(cfg.rewards)
    args = grpo_args(cfg, device, weights)  # first: it sets up the (distributed) process state
    log.info(
        "rank %d of %d (local rank %d, %s)",
        args.process_index,
        args.world_size,
        args.local_process_index,
        getattr(args.distributed_state, "distributed_type", "NO"),
    )
    # Building the offline model is file creation (seconds): one process per machine does it.
    with args.main_process_first(local=True, desc="offline model"):
        model_id = ensure_model(cfg)
    from egovlm.models.files import keyframe_size_of
    from egovlm.train.prepare import frame_spec

    spec = frame_spec(cfg, keyframe_size_of(model_id))
    # refuses unprepared data before loading anything
    data = prepared_data(cfg, spec, args.world_size) if dataset is None else None
    # Every rank loads the model itself, outside main_process_first: with ZeRO-3's zero3_init_flag
    # from_pretrained runs collectives, which one rank alone (the others at a barrier) would hang in.
    model, processor, _ = load_policy(cfg, model_id, device)
    if data is not None:
        dataset = build_dataset(cfg, data, spec)
    suppress_vision_tokens(args, model)
    log.info(
        "%d question(s) x %d rollouts per generation batch; options shuffled per rollout: %s; "
        "answers: %s; uniform groups dropped: %s",
        args.generation_batch_size // args.num_generations,
        args.num_generations,
        cfg.rollouts.shuffle_options,
        cfg.rollouts.answers,
        cfg.rollouts.drop_uniform_groups,
    )
    trainer_cls = _trainer_class()
    return trainer_cls(
        model=model,
        processing_class=processor,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        peft_config=peft_config(cfg),
        callbacks=[tensorboard_callback(run_dir), *(callbacks or [])],
        rollouts=cfg.rollouts,
    )


def _check_same_recipe(cfg: TrainConfig, run_dir: Path) -> None:
    saved = run_dir / "config.yaml"
    now = cfg.to_dict()
    if saved.is_file():
        before = read_yaml(saved, ConfigError)
        if before != now:
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            log.warning("resuming with a recipe that differs from the saved one in: %s", ", ".join(changed))
    atomic_write_text(saved, yaml.safe_dump(now, sort_keys=False))


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a ``checkpoint-N`` folder cannot be resumed from, or None when it is complete.

    transformers writes a checkpoint in place, weights first and ``trainer_state.json`` last, and
    its ``get_last_checkpoint`` takes the highest step whatever is inside: a crash, SIGKILL or a
    full disk during a save leaves a torn folder that a restart would then fail (or worse, half)
    load. Complete means: a parseable ``trainer_state.json`` and every weight file readable."""
    from egovlm.models.files import ModelLoadError, check_safetensors

    state = ckpt / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"{state.name} missing or torn ({e.__class__.__name__})"
    weights = sorted(ckpt.glob("*.safetensors"))
    if not weights and not any(ckpt.glob("global_step*")):  # DeepSpeed ZeRO keeps its own shards
        return "no .safetensors weights"
    for w in weights:
        try:
            check_safetensors(w)
        except ModelLoadError as e:
            return str(e)
    return None


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest *complete* checkpoint; torn ones (see :func:`checkpoint_problem`) are renamed
    aside to ``.torn-checkpoint-N`` (kept for inspection, never resumed from or rotated).

    Every rank of a launch calls this before the process group exists; only global rank 0
    renames (the others skip torn folders too), so two ranks never race on one rename."""
    import os
    import re

    if not run_dir.is_dir():
        return None
    found = [
        (int(m.group(1)), p) for p in run_dir.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
    ]
    for _, ckpt in sorted(found, reverse=True):
        problem = checkpoint_problem(ckpt) if ckpt.is_dir() else "not a folder"
        if problem is None:
            return str(ckpt)
        if os.environ.get("RANK", "0") != "0":
            continue
        aside = ckpt.with_name(f".torn-{ckpt.name}")
        if aside.exists():
            shutil.rmtree(aside)
        ckpt.rename(aside)
        log.warning(
            "checkpoint %s is incomplete (%s): moved to %s, resuming from an older one", ckpt, problem, aside
        )
    return None


def save_final(trainer: Any, run_dir: Path) -> Path:
    """The trained weights (or LoRA adapter) + processor + egovlm.json, swapped in atomically.

    The steps of :func:`egovlm.atomic.staged_dir`, spread over the processes of a distributed run:
    every process writes into the staging folder (ZeRO-3 gathers there), only the main one clears it
    before and swaps it in after, with barriers between (a context manager per process would race)."""
    final = run_dir / FINAL_DIR
    tmp = run_dir / f".{FINAL_DIR}.partial"
    if trainer.accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # every process: ZeRO-3 gathers the weights here
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(tmp))
        _write_meta(trainer, tmp)
        replace_dir(tmp, final)
    return final


def params_fingerprint(model: Any) -> str | None:
    """SHA-256 over this process's parameters (name, dtype, shape, bytes; in name order), or None
    when they are partitioned across ranks (DeepSpeed ZeRO-3), where a local hash means nothing.
    One tensor at a time on the CPU, so it needs no second copy of the model."""
    import torch

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda x: x[0]):
        if hasattr(p, "ds_id"):  # a ZeRO-3 partitioned parameter
            return None
        t = p.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(p.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_rank_fingerprint(trainer: Any, run_dir: Path) -> Path:
    """``ranks/rank-<i>.json`` for this process: who it was and a hash of its final weights.

    Data-parallel replicas must end with identical parameters; compare the ``params_sha256`` of
    all ranks (``egovlm``'s two-process test does) to catch a replica that diverged."""
    import os
    import socket

    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    record = {
        "rank": int(acc.process_index),
        "local_rank": int(acc.local_process_index),
        "world_size": int(acc.num_processes),
        "distributed_type": str(acc.distributed_type).split(".")[-1],
        "backend": acc.state.backend,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "global_step": int(trainer.state.global_step),
        "params_sha256": params_fingerprint(model),
        "parameters": sum(int(getattr(p, "ds_numel", p.numel())) for p in model.parameters()),
    }
    out = run_dir / RANKS_DIR / f"rank-{record['rank']}.json"
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    return out


def _write_meta(trainer: Any, out: Path) -> None:
    from egovlm.contract import CONTRACT_VERSION
    from egovlm.models.files import EGOVLM_META

    base = Path(str(getattr(trainer.model.config, "_name_or_path", "")))
    meta: dict[str, Any] = {}
    if (base / EGOVLM_META).is_file():
        meta = json.loads((base / EGOVLM_META).read_text())
    meta.update(
        trained=True, contract_version=CONTRACT_VERSION, base_model=str(base), steps=trainer.state.global_step
    )
    (out / EGOVLM_META).write_text(json.dumps(meta, indent=2) + "\n")


def median_step_time(log_history: list[dict[str, Any]]) -> float | None:
    times = [float(e["step_time"]) for e in log_history if "step_time" in e]
    return statistics.median(times) if times else None


def checkpoint_step(checkpoint: str) -> int:
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def finish_from_checkpoint(trainer: Any, checkpoint: str) -> None:
    """The last checkpoint already holds the whole run: load it instead of training.

    transformers' resume does not check ``global_step >= max_steps`` before its first step,
    so restarting a finished run would train one step past ``max_steps`` (transformers 5.23).
    ``_load_from_checkpoint`` is the loader ``Trainer.train`` itself uses for resuming."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))


def train(cfg: TrainConfig) -> RunResult:
    """Run (or resume) a recipe end to end."""
    device = preflight.check(cfg)
    run_dir = Path(cfg.run.output_dir)
    resume = last_checkpoint(run_dir) if cfg.run.resume else None
    max_steps = int(cfg.grpo.get("max_steps", -1))
    done = resume is not None and max_steps > 0 and checkpoint_step(resume) >= max_steps
    trainer = build_trainer(cfg, device)
    if trainer.accelerator.is_main_process:
        _check_same_recipe(cfg, run_dir)
    t0 = time.perf_counter()
    if done:
        assert resume is not None
        log.info("%s already reached max_steps=%d: writing the final model from it", resume, max_steps)
        finish_from_checkpoint(trainer, resume)
    else:
        if resume:
            log.info("resuming from %s", resume)
        trainer.train(resume_from_checkpoint=resume)
    final = save_final(trainer, run_dir)
    result = RunResult(
        run_dir=run_dir,
        final_dir=final,
        global_step=int(trainer.state.global_step),
        resumed_from=resume,
        step_time_s=median_step_time(trainer.state.log_history),
        train_items=len(trainer.train_dataset),
        world_size=int(trainer.accelerator.num_processes),
    )
    write_rank_fingerprint(trainer, run_dir)
    if trainer.accelerator.is_main_process:
        summary = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
        summary["wall_time_s"] = round(time.perf_counter() - t0, 2)
        atomic_write_text(run_dir / "run.json", json.dumps(summary, indent=2) + "\n")
        if cfg.run.plot:
            from egovlm.train.plot import plot_run

            plot_run(run_dir)
    return result
