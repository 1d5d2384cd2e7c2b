"""The base stage: answer-only supervised training on EgoSynth, in the exact prompt eval uses.

GRPO in the paper starts from Qwen2.5-VL-Instruct, a model that already reads images and answers
in a requested form. The offline-built models start from random weights, so on CPU this stage
stands in for that pre-training and instruction tuning, in two parts:

1. optional **vision steps** (``vision.steps``): the ViT and merger alone, trained to tell which
   objects each visual token shows (:mod:`experiments.mini.vision_aux`), the stand-in for a
   pre-trained ViT; the same loss can stay on during the language steps (``vision.aux_weight``);
2. **language steps**: next-token loss on the target tokens only, for the base-type questions
   (:mod:`experiments.mini.base_data`), each rendered by the contract's own prompt builder with
   an answer-only target, plus (``data.describe_per_set``) descriptions of the frame sets as a
   minority (:mod:`experiments.mini.pretrain_data`).

Progress is judged by **generation**, not teacher forcing: every ``optim.eval_every`` steps (and
before the first and after the last) the model answers held-out val questions greedily through
:func:`egovlm.train.generation.greedy`, the path ``egovlm eval`` uses, scored by
:func:`egovlm.contract.parse_answer` and :func:`egovlm.contract.answers_match`:
``greedy_mc_acc`` (base-type multiple choice), ``greedy_open_acc`` (open forms) and
``greedy_g_acc`` (the val folder's own QA rows of the GRPO types, never trained on). The language
loss with the right frames and with another clip's frames is logged beside them (the gap says
whether the model looks at the images).

A plain torch loop (AdamW, warm-up + cosine); the images need a custom collator anyway. Outputs in
``run.output_dir``: ``final/`` (model + processor + ``egovlm.json``, swapped in atomically),
``log.jsonl``, ``curves.png``, ``run.json`` (with the wall time).
``python -m experiments.mini pretrain --config experiments/mini/configs/base.yaml [key=value …]``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import yaml
from pydantic import Field
from pydantic.dataclasses import dataclass

from egovlm.atomic import atomic_path, atomic_write_text, replace_dir
from egovlm.config import load
from egovlm.train.config import STRICT, ConfigError
from experiments.mini.base_data import (
    ANSWER_FORMS,
    BASE_TYPES,
    START_CITES,
    QAExample,
    build_base_examples,
    check_kinds,
    grpo_questions,
    val_questions,
)
from experiments.mini.pretrain_data import Example, PretrainDataError, add_wrap_tokens

TrainExample: TypeAlias = QAExample | Example

log = logging.getLogger("experiments.mini.pretrain")
IGNORE = -100  # label of tokens without loss (prompt, padding)
CORPORA = ("default", "egosynth")


@dataclass(config=STRICT)
class PretrainRun:
    output_dir: str
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    log_every: int = 10


@dataclass(config=STRICT)
class PretrainModel:
    build: str = "nano"  # egovlm.models preset, random init (saved in <output_dir>/init)
    # the tokenizer's extra corpus: egosynth makes every EgoSynth name, place and question word whole
    # tokens (egovlm.synth.vocabulary); default: the preset's own corpus
    corpus: str = "default"
    seed: int = 0
    center_visual: bool = True  # data-dependent init of the merger output (center_visual_features)
    # continue from a model this stage trained (e.g. the single-frame phase's final/) instead of
    # building one; then no centring applies
    init_from: str | None = None


@dataclass(config=STRICT)
class PretrainData:
    train: str  # EgoSynth folder (captions.jsonl, events.jsonl, clips.jsonl, videos/)
    val: str | None = None  # EgoSynth folder for the validation loss and greedy accuracy
    frames: int = 8
    frame_sets: int = 2  # per clip: the uniform set + (frame_sets - 1) jittered ones
    qa_per_set: int = 4  # base-type questions per frame set (experiments.mini.base_data)
    kinds: list[str] = field(default_factory=lambda: list(BASE_TYPES))
    open_share: float = 0.3  # share of the open-form kinds' questions asked open
    answer_form: str = "text"  # text: the option's text in <answer>; letter: the option letter
    reword_share: float = 0.0  # share of questions asked in other words (base_data.reword)
    restyle_share: float = 0.0  # share of MC questions with options in another style (base_data.restyle)
    describe_per_set: int = 0  # descriptions (pretrain_data) per frame set
    start_cites: str = "first_frame"  # what a start-place target cites (base_data.START_CITES)
    tasks: list[str] | None = None  # description tasks (pretrain_data.TASKS by default)
    max_clips: int | None = None
    val_clips: int = 12
    seed: int = 0


@dataclass(config=STRICT)
class PretrainOptim:
    steps: int = 500
    batch_size: int = 8
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr x this
    warmup_steps: int = 30
    weight_decay: float = 0.01
    vision_lr_scale: float = 1.0  # the vision tower's (ViT + merger) learning rate = lr x this
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 100  # validation loss and greedy accuracy


@dataclass(config=STRICT)
class PretrainGreedy:
    """The in-loop greedy evaluation on val questions (module docstring)."""

    mc: int = 100  # base-type multiple-choice questions (0: none)
    open: int = 50  # open questions (0: none)
    grpo: int = 0  # val QA rows of the GRPO types (0: none)
    max_new_tokens: int = 64
    batch_size: int = 8
    loss_examples: int = 24  # val examples for the language loss (right vs another clip's frames)


@dataclass(config=STRICT)
class PretrainVision:
    """The dense object-label loss on the visual tokens (:mod:`experiments.mini.vision_aux`)."""

    steps: int = 0  # vision-only steps (ViT + merger + heads) before the language steps
    batch_frames: int = 32
    lr: float = 1e-3
    frames_per_clip: int = 16  # random-time frames per training clip for the vision-only steps
    aux_weight: float = 0.0  # weight of the same loss during the language steps (0: off)
    pos_weight: float = 1.0  # BCE weight of the rare positive labels (vision_aux module docstring)
    # the per-token head: linear, or names (read against the object names' word embeddings, NameHead)
    head: Literal["linear", "names"] = "linear"
    # a per-token column per place too: 1 on the tokens of an object resting there (vision_aux.frame_labels)
    places: bool = False
    # per-frame columns too: is this frame the prompt frame nearest a pick-up / put-down of each object
    # (vision_aux.frame_labels), what a keyframe citation of that event is scored against
    events: bool = False
    # the prompt those columns assume: a frame is "nearest" within half the spacing of this many frames
    # over the clip (the eval's 8), whatever the phase's own prompts show (phase 1: one frame)
    event_frames: int = Field(default=8, ge=1)
    seed: int = 0


@dataclass(config=STRICT)
class PretrainConfig:
    run: PretrainRun
    data: PretrainData
    model: PretrainModel = field(default_factory=PretrainModel)
    optim: PretrainOptim = field(default_factory=PretrainOptim)
    greedy: PretrainGreedy = field(default_factory=PretrainGreedy)
    vision: PretrainVision = field(default_factory=PretrainVision)


def load_pretrain_config(path: Path | str, overrides: list[str] | None = None) -> PretrainConfig:
    """YAML + dotted overrides, like the GRPO recipes (:func:`egovlm.config.load`); unknown keys are
    errors naming the key and the file or override."""
    cfg = load(path, PretrainConfig, overrides, ConfigError)
    d = cfg.data
    if d.frames < 1 or d.frame_sets < 1 or cfg.optim.steps < 1 or cfg.optim.batch_size < 1:
        raise ConfigError(f"{path}: data.frames, data.frame_sets, optim.steps, optim.batch_size must be >= 1")
    if d.answer_form not in ANSWER_FORMS:
        raise ConfigError(
            f"{path}: data.answer_form is {d.answer_form!r}; choose one of {', '.join(ANSWER_FORMS)}"
        )
    if not d.kinds:
        raise ConfigError(f"{path}: data.kinds is empty; choose from {', '.join(BASE_TYPES)}")
    try:
        check_kinds(d.kinds, d.frames)
    except PretrainDataError as e:
        raise ConfigError(f"{path}: data.kinds {d.kinds} with data.frames {d.frames}: {e}") from e
    if d.start_cites not in START_CITES:
        raise ConfigError(
            f"{path}: data.start_cites is {d.start_cites!r}; choose one of {', '.join(START_CITES)}"
        )
    for name in ("open_share", "reword_share", "restyle_share"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            raise ConfigError(f"{path}: data.{name} must lie in [0, 1], got {getattr(d, name)}")
    if cfg.model.corpus not in CORPORA:
        raise ConfigError(f"{path}: model.corpus is {cfg.model.corpus!r}; choose one of {', '.join(CORPORA)}")
    return cfg


def encode(processor: Any, ex: TrainExample, frames: list[Any] | None = None) -> dict[str, Any]:
    """Token ids, masks and image tensors of one example; labels only on the target (+ end token).

    The prompt goes through the processor exactly as :func:`egovlm.train.generation.greedy` sends
    it (chat template with the generation prompt, then the processor, which expands each image
    placeholder to the frame's visual tokens); the target is tokenised on its own and appended, so
    the boundary is exact and the prompt tokens are the ones generation sees."""
    import torch

    frames = frames if frames is not None else ex.frames
    text = processor.apply_chat_template(ex.prompt(), add_generation_prompt=True, tokenize=False)
    prompt = processor(text=[text], images=[[f.pil() for f in frames]], return_tensors="pt")
    target = processor.tokenizer(ex.target + "<|im_end|>\n", add_special_tokens=False, return_tensors="pt")
    ids_t = target["input_ids"][0]
    return {
        "input_ids": torch.cat([prompt["input_ids"][0], ids_t]),
        "labels": torch.cat([torch.full_like(prompt["input_ids"][0], IGNORE), ids_t]),
        "mm_token_type_ids": torch.cat([prompt["mm_token_type_ids"][0], torch.zeros_like(ids_t)]),
        "pixel_values": prompt["pixel_values"],
        "image_grid_thw": prompt["image_grid_thw"],
    }


def collate(rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-padded batch (padding has attention 0 and label IGNORE); images concatenated in order."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)

    def pad(key: str, value: int) -> Any:
        return torch.stack(
            [torch.nn.functional.pad(r[key], (0, width - len(r[key])), value=value) for r in rows]
        )

    lengths = torch.tensor([len(r["input_ids"]) for r in rows])
    return {
        "input_ids": pad("input_ids", pad_id),
        "labels": pad("labels", IGNORE),
        "mm_token_type_ids": pad("mm_token_type_ids", 0),
        "attention_mask": (torch.arange(width)[None, :] < lengths[:, None]).long(),
        "pixel_values": torch.cat([r["pixel_values"] for r in rows]),
        "image_grid_thw": torch.cat([r["image_grid_thw"] for r in rows]),
    }


def lr_at(step: int, o: PretrainOptim) -> float:
    """Linear warm-up, then cosine down to ``lr x min_lr_ratio`` at the last step."""
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def mean_loss(
    model: Any, processor: Any, examples: list[TrainExample], shuffled: bool, batch: int = 8
) -> float:
    """Mean target-token loss; ``shuffled`` shows each example the frames of the next clip's example
    (same frame count), so ``shuffled - matched`` is what the images are worth to the model."""
    import torch

    pad_id = processor.tokenizer.pad_token_id
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(examples), batch):
            rows = []
            for j, ex in enumerate(examples[i : i + batch], start=i):
                other = _other_clip(examples, j) if shuffled else ex
                rows.append(encode(processor, ex, other.frames))
            b = collate(rows, pad_id)
            out = model(**b)
            n = int((b["labels"][:, 1:] != IGNORE).sum())
            total += float(out.loss) * n
            count += n
    model.train()
    return total / max(count, 1)


def _other_clip(examples: list[TrainExample], j: int) -> TrainExample:
    """The next example (cyclically) from a different clip with the same frame count."""
    n = len(examples)
    for k in range(1, n):
        cand = examples[(j + k) % n]
        if cand.clip_id != examples[j].clip_id and len(cand.frames) == len(examples[j].frames):
            return cand
    return examples[j]


def is_right(completion: str, ex: QAExample) -> bool:
    """Whether a completion answers ``ex`` correctly, by the contract's parser and matcher (as eval
    scores it): a multiple-choice answer by its letter or its option's exact text, an open one by
    its words."""
    from egovlm.contract import parse_answer
    from egovlm.train.rewards import is_correct

    return is_correct(parse_answer(completion, None, ex.question.options), ex.question.answer)


def greedy_accuracy(
    model: Any, processor: Any, examples: list[QAExample], max_new_tokens: int, batch: int = 8
) -> tuple[float | None, dict[str, float]]:
    """Greedy answers through :func:`egovlm.train.generation.greedy` (eval's generation path, answers
    restricted to the options as eval's are): (accuracy, accuracy per question type); None without
    examples."""
    from egovlm.train.generation import greedy

    if not examples:
        return None, {}
    right: list[bool] = []
    model.eval()
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        images = [[f.pil() for f in ex.frames] for ex in chunk]
        options = [ex.question.options for ex in chunk]
        texts = greedy(model, processor, [ex.prompt() for ex in chunk], images, max_new_tokens, options)
        right += [is_right(t, ex) for t, ex in zip(texts, chunk, strict=True)]
    model.train()
    by_type: dict[str, list[bool]] = {}
    for ok, ex in zip(right, examples, strict=True):
        by_type.setdefault(ex.kind + ("_open" if ex.question.is_open else ""), []).append(ok)
    return float(np.mean(right)), {k: float(np.mean(v)) for k, v in sorted(by_type.items())}


@dataclasses.dataclass
class ValSets:
    """What the in-loop validation measures: loss examples and the three greedy question sets."""

    loss: list[TrainExample]
    mc: list[QAExample]
    open: list[QAExample]
    grpo: list[QAExample]


def _val_sets(cfg: PretrainConfig, size: tuple[int, int]) -> ValSets:
    d, g = cfg.data, cfg.greedy
    if d.val is None:
        return ValSets([], [], [], [])
    folder = Path(d.val)
    asked = val_questions(
        folder, d.frames, size, d.seed + 1, d.kinds, d.val_clips, d.answer_form, d.start_cites
    )
    rng = np.random.default_rng(d.seed + 1)
    mc = [ex for ex in asked if not ex.question.is_open]
    opened = [ex for ex in asked if ex.question.is_open]
    mc = [mc[int(i)] for i in sorted(rng.permutation(len(mc))[: g.mc])]
    opened = [opened[int(i)] for i in sorted(rng.permutation(len(opened))[: g.open])]
    decoded = {ex.clip_id: ex.frames for ex in asked}
    grpo = grpo_questions(folder, d.frames, size, g.grpo, decoded) if d.frames > 1 else []
    loss: list[TrainExample] = [asked[int(i)] for i in sorted(rng.permutation(len(asked))[: g.loss_examples])]
    return ValSets(loss, mc, opened, grpo)


def _init_model(cfg: PretrainConfig, run_dir: Path) -> Path:
    """The folder the run starts from: ``model.init_from``, or a fresh build in ``<run>/init``."""
    from egovlm.models.build import build_model
    from egovlm.models.files import EGOVLM_META

    if cfg.model.init_from:
        start = Path(cfg.model.init_from)
        missing = [n for n in ("config.json", "model.safetensors", EGOVLM_META) if not (start / n).is_file()]
        if missing:
            raise ConfigError(
                f"model.init_from: {start} has no {', '.join(missing)} (a pretrain final/ folder)"
            )
        return start
    init = run_dir / "init"
    if not (init / "config.json").is_file():
        if init.exists():
            shutil.rmtree(init)
        if cfg.model.corpus == "egosynth":
            from egovlm.synth.vocabulary import egosynth_vocabulary

            corpus = egosynth_vocabulary()
            build_model(
                cfg.model.build, init, seed=cfg.model.seed, extra_corpus=corpus, corpus_name="egosynth"
            )
        else:
            build_model(cfg.model.build, init, seed=cfg.model.seed)
    return init


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run the stage end to end; returns the run summary (also written to ``run.json``)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from egovlm.models.files import keyframe_size_of

    t0 = time.perf_counter()
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    run_dir = Path(cfg.run.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(asdict(cfg), sort_keys=False))
    init = _init_model(cfg, run_dir)
    processor = AutoProcessor.from_pretrained(str(init))
    model = AutoModelForImageTextToText.from_pretrained(str(init), dtype=torch.float32, use_safetensors=True)
    d = cfg.data
    if d.describe_per_set and add_wrap_tokens(processor.tokenizer):  # the descriptions' tags
        model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    size = keyframe_size_of(init)
    train_set = build_base_examples(
        Path(d.train),
        d.frames,
        d.frame_sets,
        size,
        d.seed,
        d.qa_per_set,
        d.kinds,
        d.open_share,
        d.answer_form,
        d.describe_per_set,
        d.tasks,
        d.max_clips,
        d.reword_share,
        d.restyle_share,
        d.start_cites,
    )
    if not train_set:
        raise ValueError(f"{d.train}: no clips to pre-train on")
    val = _val_sets(cfg, size)
    log.info(
        "%d training examples; val: %d MC, %d open, %d GRPO-type questions (%.1f s)",
        len(train_set),
        len(val.mc),
        len(val.open),
        len(val.grpo),
        time.perf_counter() - t0,
    )
    vis = cfg.vision
    aux = (
        _AuxLabels(model, processor.tokenizer, Path(d.train), size, vis)
        if vis.steps or vis.aux_weight
        else None
    )
    vision_log = []
    centre = cfg.model.center_visual and not cfg.model.init_from
    if centre:  # before the vision steps: re-centring after them would move what the heads learned
        log.info("visual features centred: %s", center_visual_features(model, processor, train_set))
    if aux is not None and vis.steps:
        from experiments.mini.vision_aux import train_vision

        clips = list(aux.clips.values())[: d.max_clips] if d.max_clips else list(aux.clips.values())
        args = (vis.steps, vis.batch_frames, vis.lr, vis.frames_per_clip, vis.seed, vis.event_frames)
        vision_log = train_vision(model, processor, aux.head, clips, size, *args)
        if centre:  # a pure rescale: the heads read layer-normed tokens, which it leaves unchanged
            log.info(
                "visual features rescaled: %s",
                center_visual_features(model, processor, train_set, shift=False),
            )
    history = train_loop(model, processor, train_set, val, cfg, run_dir / "log.jsonl", aux)
    if aux is not None:
        aux.remove()
    info = {
        "steps": cfg.optim.steps,
        "examples": len(train_set),
        "data": d.train,
        "answer_form": d.answer_form,
        "frames": d.frames,
        "final_train_loss": history["train"][-1][1] if history["train"] else None,
        "vision": vision_log,
        **({k: v for k, v in history["val"][-1].items() if k != "step"} if history["val"] else {}),
    }
    if cfg.model.init_from:
        info["continued_from"] = cfg.model.init_from
    save_model(model, processor, init, run_dir / "final", info)
    summary = {**info, "wall_time_s": round(time.perf_counter() - t0, 1), "final_dir": str(run_dir / "final")}
    atomic_write_text(run_dir / "run.json", json.dumps(summary, indent=2) + "\n")
    plot_pretrain(run_dir / "log.jsonl", run_dir / "curves.png")
    return summary


def train_loop(
    model: Any,
    processor: Any,
    train_set: list[TrainExample],
    val: ValSets,
    cfg: PretrainConfig,
    log_path: Path,
    aux: _AuxLabels | None = None,
) -> dict[str, Any]:
    """AdamW steps over shuffled batches; validation (:func:`_validate`) before the first step,
    every ``eval_every`` steps and at the end. With ``aux`` the vision head's loss is added at
    ``vision.aux_weight``."""
    import torch

    o = cfg.optim
    torch.manual_seed(o.seed)
    rng = np.random.default_rng(o.seed)
    opt = _optimizer(model, o, aux.head.parameters() if aux else [])
    pad_id = processor.tokenizer.pad_token_id
    history: dict[str, Any] = {"train": [], "val": []}
    log_path.unlink(missing_ok=True)
    _validate(model, processor, val, cfg, 0, history, log_path)
    order = rng.permutation(len(train_set))
    cursor, running, t_start = 0, [], time.perf_counter()
    model.train()
    for step in range(o.steps):
        if cursor + o.batch_size > len(order):
            order, cursor = rng.permutation(len(train_set)), 0
        batch = [train_set[i] for i in order[cursor : cursor + o.batch_size]]
        cursor += o.batch_size
        extras: dict[str, Callable[[], Any]] = {}
        if aux and cfg.vision.aux_weight:
            extras["vision_aux_loss"] = functools.partial(_weighted, aux, batch, cfg.vision.aux_weight)
        encoded = collate([encode(processor, ex) for ex in batch], pad_id)
        running.append(_step(model, opt, encoded, lr_at(step, o), o, extras))
        last = step + 1 == o.steps
        if (step + 1) % cfg.run.log_every == 0 or last:
            row = {"step": step + 1, **{k: float(np.mean([r[k] for r in running])) for k in running[0]}}
            row |= {"lr": lr_at(step, o), "elapsed_s": round(time.perf_counter() - t_start, 1)}
            history["train"].append((step + 1, row["loss"]))
            _append(log_path, row)
            log.info("step %d loss %.3f", step + 1, row["loss"])
            running = []
        if (step + 1) % o.eval_every == 0 or last:
            _validate(model, processor, val, cfg, step + 1, history, log_path)
    return history


def _step(
    model: Any,
    opt: Any,
    batch: dict[str, Any],
    lr: float,
    o: PretrainOptim,
    extras: dict[str, Callable[[], Any]],
) -> dict[str, float]:
    """One AdamW step on the language loss (the mean next-token loss over target tokens, logged as
    ``loss``) plus each of ``extras`` (called after the forward pass: the vision head reads the
    visual tokens it captured); returns every loss by name."""
    import torch

    for group in opt.param_groups:
        group["lr"] = lr * group["scale"]
    losses = {"loss": model(**batch).loss}
    losses |= {name: extra() for name, extra in extras.items()}
    opt.zero_grad(set_to_none=True)
    torch.stack(list(losses.values())).sum().backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], o.grad_clip)
    opt.step()
    return {name: float(loss.detach()) for name, loss in losses.items()}


def _validate(
    model: Any,
    processor: Any,
    val: ValSets,
    cfg: PretrainConfig,
    step: int,
    history: dict[str, Any],
    log_path: Path,
) -> None:
    """Language loss (right vs another clip's frames) and greedy accuracy on the val sets."""
    if not (val.loss or val.mc or val.open or val.grpo):
        return
    t0 = time.perf_counter()
    row: dict[str, Any] = {"step": step}
    if val.loss:
        row["val_loss"] = mean_loss(model, processor, val.loss, shuffled=False)
        row["val_loss_shuffled_frames"] = mean_loss(model, processor, val.loss, shuffled=True)
    g = cfg.greedy
    by_type: dict[str, float] = {}
    for name, examples in (("mc", val.mc), ("open", val.open), ("g", val.grpo)):
        acc, types = greedy_accuracy(model, processor, examples, g.max_new_tokens, g.batch_size)
        if acc is not None:
            row[f"greedy_{name}_acc"] = acc
            by_type |= types
    if by_type:
        row["greedy_by_type"] = by_type
    row["val_seconds"] = round(time.perf_counter() - t0, 1)
    history["val"].append(row)
    _append(log_path, row)
    log.info(
        "step %d greedy MC %s, open %s, GRPO types %s; val loss %s (another clip's frames %s)",
        step,
        *(_pct(row.get(k)) for k in ("greedy_mc_acc", "greedy_open_acc", "greedy_g_acc")),
        *(f"{row[k]:.3f}" if k in row else "-" for k in ("val_loss", "val_loss_shuffled_frames")),
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def center_visual_features(
    model: Any, processor: Any, examples: list[TrainExample], frames: int = 128, shift: bool = True
) -> dict[str, float]:
    """Data-dependent init of the vision merger's last layer: its outputs centred and scaled.

    A random-init ViT maps every 28x28 region of these frames (mostly table, wall or counter)
    to nearly the same vector: the part that differs between regions is ~5% of the norm, so
    after the language model's RMSNorm all visual tokens look alike and the model learns to
    ignore them (measured: validation loss with another clip's frames equal to the loss with
    the right ones after 300 steps). Subtracting the mean output over real frames (through
    the last Linear's bias) and scaling it so the centred outputs have the norm of a text
    embedding makes the differences the whole signal, as data-dependent initialisation
    (weight normalisation, LSUV) does for any layer. Same architecture, only weights change.
    ``shift=False`` only rescales (after the vision steps, which change the spread)."""
    import torch

    merger_out = model.model.visual.merger.mlp[-1]
    sample = [ex for ex in examples[:: max(1, len(examples) // 64)]]
    images = [f.pil() for ex in sample for f in ex.frames][:frames]
    inputs = processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        feats = model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
        mean = feats.mean(0)
        spread = (feats - mean).norm(dim=-1).mean()
        target = model.get_input_embeddings().weight.norm(dim=-1).mean()
        scale = target / spread
        merger_out.weight.mul_(scale)
        merger_out.bias.copy_((merger_out.bias - (mean if shift else 0)) * scale)
    return {
        "scale": float(scale),
        "mean_norm": float(mean.norm()),
        "spread": float(spread),
        "target": float(target),
    }


def save_model(model: Any, processor: Any, init: Path, out: Path, info: dict[str, Any]) -> Path:
    """Weights (safetensors) + processor + egovlm.json, written beside ``out`` and renamed into place."""
    from egovlm.models.files import EGOVLM_META

    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    meta = json.loads((init / EGOVLM_META).read_text())
    meta.update(trained=True, stage="pretrain", pretrain=info)
    (tmp / EGOVLM_META).write_text(json.dumps(meta, indent=2) + "\n")
    return replace_dir(tmp, out)


class _AuxLabels:
    """The vision head (:mod:`experiments.mini.vision_aux`) and its labels per frame set, computed once."""

    def __init__(
        self, model: Any, tokenizer: Any, folder: Path, size: tuple[int, int], vis: PretrainVision
    ) -> None:
        from experiments.mini.pretrain_data import load_truth
        from experiments.mini.vision_aux import MERGE, VisionAux, object_names

        self.names = object_names()
        self.clips = {c.clip_id: c for c in load_truth(folder)}
        self.size = size
        tokens = VisionAux.name_tokens(tokenizer, vis.places) if vis.head == "names" else None
        per_frame = (size[0] // MERGE) * (size[1] // MERGE)
        self.head = VisionAux(
            model, len(self.names), per_frame, vis.pos_weight, tokens, vis.places, vis.events
        )
        self.event_frames = vis.event_frames
        self._cache: dict[tuple[str, tuple[float, ...]], tuple[Any, Any]] = {}

    def labels(self, ex: TrainExample) -> tuple[Any, Any]:
        import torch

        from experiments.mini.vision_aux import frame_labels

        key = (ex.clip_id, tuple(f.timestamp_s for f in ex.frames))
        if key not in self._cache:
            clip = self.clips[ex.clip_id]
            # half the spacing of an event_frames prompt: the frames nearest an event, what a citation
            # of it is scored against
            window = clip.duration_s / (2 * self.event_frames) if self.head.events else None
            cells, held = frame_labels(
                clip, ex.frames, self.size, places=self.head.places, event_window_s=window
            )
            self._cache[key] = (torch.from_numpy(cells.reshape(-1, cells.shape[-1])), torch.from_numpy(held))
        return self._cache[key]

    def loss(self, batch: list[TrainExample]) -> Any:
        import torch

        pairs = [self.labels(ex) for ex in batch]
        return self.head.loss(torch.cat([c for c, _ in pairs]), torch.cat([h for _, h in pairs]))

    def remove(self) -> None:
        self.head.remove()


def _weighted(aux: _AuxLabels, batch: list[TrainExample], weight: float) -> Any:
    return aux.loss(batch) * weight


def _optimizer(model: Any, o: PretrainOptim, head: list[Any]) -> Any:
    """AdamW; no weight decay on embeddings, norms and biases; the vision tower at
    ``lr x vision_lr_scale`` (each group's ``scale`` multiplies the scheduled lr)."""
    import torch

    groups = []
    for vision in (False, True):
        named = [(n, p) for n, p in model.named_parameters() if (".visual." in f".{n}") == vision]
        decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
        rest = [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)]
        scale = o.vision_lr_scale if vision else 1.0
        groups += [
            {"params": decay, "weight_decay": o.weight_decay, "scale": scale},
            {"params": rest, "weight_decay": 0.0, "scale": scale},
        ]
    groups.append({"params": head, "weight_decay": 0.0, "scale": 1.0})
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr)


GREEDY_CURVES = {
    "greedy_mc_acc": "base types, MC",
    "greedy_open_acc": "base types, open",
    "greedy_g_acc": "GRPO types, MC",
}


def plot_pretrain(log_path: Path, out: Path) -> Path:
    """Left: training loss and the two validation losses; right: greedy val accuracy over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    fig, (ax, acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if val:
        steps = [r["step"] for r in val]
        ax.plot(steps, [r["val_loss"] for r in val], marker="o", label="val (its frames)")
        ax.plot(
            steps,
            [r["val_loss_shuffled_frames"] for r in val],
            marker="x",
            label="val (another clip's frames)",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (target tokens)")
    ax.set_title("base stage: answer-only targets")
    for key, label in GREEDY_CURVES.items():
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            acc.plot(*zip(*points, strict=True), marker="o", label=label)
    acc.set_xlabel("step")
    acc.set_ylabel("greedy accuracy (val)")
    acc.set_ylim(0, 1)
    for a in (ax, acc):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
