"""The base-model stage: supervised training on EgoSynth ground truth, never on the QA.

GRPO in the paper starts from Qwen2.5-VL-Instruct, a model that already connects images to words
and follows an answer format. The offline-built models start from random weights, so on CPU this
stage stands in for that pre-training and instruction tuning, in up to three parts:

0. optional **text steps** (``text.steps``): lettered-list lookup drills without frames
   (:mod:`experiments.mini.pretrain_text`), the stand-in for arriving with a pre-trained LLM;
1. optional **vision steps** (``vision.steps``): the ViT and merger alone, trained to tell which
   objects each visual token shows (:mod:`experiments.mini.vision_aux`), the stand-in for a
   pre-trained ViT; the same loss can stay on during the language steps (``vision.aux_weight``);
2. **language steps**: next-token loss on the target tokens only, for descriptions of frame sets
   (:mod:`experiments.mini.pretrain_data`) and, with ``data.perception_per_set``, single-frame
   perception questions in the contract's prompt and answer grammar
   (:mod:`experiments.mini.pretrain_perception`), optionally with lookup drills added to every step
   (``text.mix_batch``). Frames enter through the contract's layout.

It never sees the EgoSynth QA's questions about the clip's events, their answers or any
reasoning about them, so whatever the model later gains on that QA comes from RL.

A plain torch loop (AdamW, warm-up + cosine), written out rather than through ``Trainer``:
the images need a custom collator anyway, and the loop is short enough to read in one go.
Outputs in ``run.output_dir``: ``final/`` (model + processor + ``egovlm.json``, swapped in
atomically), ``log.jsonl`` (train loss; validation loss with the right frames and with frames
of another clip, whose gap shows whether the model looks at the images), ``curves.png``,
``text_log.jsonl`` (the text steps), ``run.json``.
``python -m experiments.mini pretrain --config experiments/mini/configs/pretrain.yaml [key=value …]``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import yaml
from pydantic.dataclasses import dataclass

from egovlm.atomic import atomic_path, atomic_write_text, replace_dir
from egovlm.config import load
from egovlm.train.config import STRICT, ConfigError
from experiments.mini.pretrain_data import Example, add_wrap_tokens, build_examples
from experiments.mini.pretrain_perception import PerceptionExample
from experiments.mini.pretrain_text import DrillMix, PretrainText, train_text

TrainExample: TypeAlias = Example | PerceptionExample

log = logging.getLogger("experiments.mini.pretrain")
IGNORE = -100  # label of tokens without loss (prompt, padding)


@dataclass(config=STRICT)
class PretrainRun:
    output_dir: str
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    log_every: int = 10


@dataclass(config=STRICT)
class PretrainModel:
    build: str = "nano"  # egovlm.models preset, random init (saved in <output_dir>/init)
    seed: int = 0
    center_visual: bool = True  # data-dependent init of the merger output (center_visual_features)
    # continue from a model this stage trained (e.g. a single-frame phase's final/) instead of
    # building one; then neither centring nor the answer-tag init applies
    init_from: str | None = None


@dataclass(config=STRICT)
class PretrainData:
    train: str  # EgoSynth folder (captions.jsonl, events.jsonl, videos/)
    val: str | None = None  # EgoSynth folder for the validation loss
    frames: int = 8
    frame_sets: int = 3  # per clip: the uniform set + (frame_sets - 1) jittered ones
    per_set: int = 3  # examples (random description blocks) per frame set
    max_clips: int | None = None
    val_clips: int = 12
    tasks: list[str] | None = None  # description tasks (experiments.mini.pretrain_data.TASKS by default)
    # perception questions in the answer grammar per frame set (pretrain_perception)
    perception_per_set: int = 0
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
    # loss weight of a perception question's option letter (the token after <answer>) relative to the
    # other target tokens: one token of ~30, it is what instruction tuning must get right
    answer_weight: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 100


@dataclass(config=STRICT)
class PretrainVision:
    """The dense object-label loss on the visual tokens (:mod:`experiments.mini.vision_aux`)."""

    steps: int = 0  # vision-only steps (ViT + merger + heads) before the language steps
    batch_frames: int = 32
    lr: float = 1e-3
    frames_per_clip: int = 16  # random-time frames per training clip for the vision-only steps
    aux_weight: float = 0.0  # weight of the same loss during the language steps (0: off)
    seed: int = 0


@dataclass(config=STRICT)
class PretrainConfig:
    run: PretrainRun
    data: PretrainData
    model: PretrainModel = field(default_factory=PretrainModel)
    optim: PretrainOptim = field(default_factory=PretrainOptim)
    vision: PretrainVision = field(default_factory=PretrainVision)
    text: PretrainText = field(default_factory=PretrainText)


def load_pretrain_config(path: Path | str, overrides: list[str] | None = None) -> PretrainConfig:
    """YAML + dotted overrides, like the GRPO recipes (:func:`egovlm.config.load`); unknown keys are
    errors naming the key and the file or override."""
    cfg = load(path, PretrainConfig, overrides, ConfigError)
    if cfg.data.frames < 1 or cfg.data.frame_sets < 1 or cfg.optim.steps < 1 or cfg.optim.batch_size < 1:
        raise ConfigError(f"{path}: data.frames, data.frame_sets, optim.steps, optim.batch_size must be >= 1")
    return cfg


def encode(processor: Any, ex: TrainExample, frames: list[Any] | None = None) -> dict[str, Any]:
    """Token ids, masks and image tensors of one example; labels only on the target (+ end token).

    The prompt goes through the processor (it expands each image placeholder to the frame's
    visual tokens); the target is tokenised on its own and appended, so the boundary is exact."""
    import torch

    frames = frames if frames is not None else ex.frames
    text = processor.apply_chat_template(ex.prompt(), add_generation_prompt=True, tokenize=False)
    prompt = processor(text=[text], images=[[f.pil() for f in frames]], return_tensors="pt")
    target = processor.tokenizer(ex.target + "<|im_end|>\n", add_special_tokens=False, return_tensors="pt")
    ids_t = target["input_ids"][0]
    ids = torch.cat([prompt["input_ids"][0], ids_t])
    labels = torch.cat([torch.full_like(prompt["input_ids"][0], IGNORE), ids_t])
    mm = torch.cat([prompt["mm_token_type_ids"][0], torch.zeros_like(ids_t)])
    return {
        "input_ids": ids,
        "labels": labels,
        "answer_at": answer_position(processor.tokenizer, ids, len(ids) - len(ids_t)),
        "mm_token_type_ids": mm,
        "pixel_values": prompt["pixel_values"],
        "image_grid_thw": prompt["image_grid_thw"],
    }


def answer_position(tokenizer: Any, ids: Any, target_start: int) -> int:
    """Index of the option letter in ``ids`` (the token after the target's ``<answer>``), or -1
    for a target without one (descriptions)."""
    tag = tokenizer.convert_tokens_to_ids("<answer>")
    hits = (ids[target_start:] == tag).nonzero()
    return target_start + int(hits[-1]) + 1 if len(hits) else -1


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
        "answer_at": torch.tensor([r["answer_at"] for r in rows]),
    }


def weighted_loss(logits: Any, labels: Any, answer_at: Any, answer_weight: float) -> Any:
    """Next-token cross-entropy over the target tokens, the option letter's weighted ``answer_weight``
    (1.0: the plain mean, as the model's own loss)."""
    import torch

    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE, reduction="none"
    ).view(labels.shape[0], -1)
    weights = (labels[:, 1:] != IGNORE).float()
    rows = (answer_at >= 1).nonzero().flatten()
    weights[rows, answer_at[rows] - 1] *= answer_weight  # logits at i predict token i + 1
    return (ce * weights).sum() / weights.sum()


def letter_hits(logits: Any, batch: dict[str, Any]) -> tuple[int, int]:
    """(right, asked): how many option letters the model's argmax gets right given the target up to
    ``<answer>`` (teacher-forced), over the batch's examples that have one."""
    rows = (batch["answer_at"] >= 1).nonzero().flatten()
    at = batch["answer_at"][rows]
    predicted = logits[rows, at - 1].argmax(-1)
    return int((predicted == batch["input_ids"][rows, at]).sum()), len(rows)


def lr_at(step: int, o: PretrainOptim) -> float:
    """Linear warm-up, then cosine down to ``lr x min_lr_ratio`` at the last step."""
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def mean_loss(
    model: Any, processor: Any, examples: list[TrainExample], shuffled: bool, batch: int = 8
) -> tuple[float, float | None]:
    """Mean target-token loss and the perception questions' letter accuracy (:func:`letter_hits`;
    None without questions); ``shuffled`` shows each example the frames of the next clip's example
    (same task and text), so ``shuffled - matched`` is what the images are worth to the model."""
    import torch

    pad_id = processor.tokenizer.pad_token_id
    total, count, right, asked = 0.0, 0, 0, 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(examples), batch):
            rows = []
            for j, ex in enumerate(examples[i : i + batch], start=i):
                other = _other_clip(examples, j) if shuffled else ex
                rows.append(encode(processor, ex, other.frames))
            b = collate(rows, pad_id)
            out = model(**model_inputs(b))
            n = int((b["labels"][:, 1:] != IGNORE).sum())
            total += float(out.loss) * n
            count += n
            hits = letter_hits(out.logits, b)
            right, asked = right + hits[0], asked + hits[1]
    model.train()
    return total / max(count, 1), (right / asked if asked else None)


def model_inputs(batch: dict[str, Any], *drop: str) -> dict[str, Any]:
    """The batch without the keys the model does not take (and without ``drop``: ``"labels"``
    when the loss is computed outside the model)."""
    return {k: v for k, v in batch.items() if k != "answer_at" and k not in drop}


def _other_clip(examples: list[TrainExample], j: int) -> TrainExample:
    """The next example (cyclically) from a different clip with the same frame count."""
    n = len(examples)
    for k in range(1, n):
        cand = examples[(j + k) % n]
        if cand.clip_id != examples[j].clip_id and len(cand.frames) == len(examples[j].frames):
            return cand
    return examples[j]


def _val_examples(cfg: PretrainConfig, size: tuple[int, int]) -> list[TrainExample]:
    d = cfg.data
    if d.val is None:
        return []
    # the uniform frame set only (the QA prompts' times); one example per (clip, task)
    return build_examples(
        Path(d.val), d.frames, 1, size, d.seed + 1, 2, d.val_clips, d.tasks, min(d.perception_per_set, 2)
    )


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
        build_model(cfg.model.build, init, seed=cfg.model.seed)
    return init


def center_visual_features(
    model: Any, processor: Any, examples: list[TrainExample], frames: int = 128
) -> dict[str, float]:
    """Data-dependent init of the vision merger's last layer: its outputs centred and scaled.

    A random-init ViT maps every 28x28 region of these frames (mostly table, wall or counter)
    to nearly the same vector: the part that differs between regions is ~5% of the norm, so
    after the language model's RMSNorm all visual tokens look alike and the model learns to
    ignore them (measured: validation loss with another clip's frames equal to the loss with
    the right ones after 300 steps). Subtracting the mean output over real frames (through
    the last Linear's bias) and scaling it so the centred outputs have the norm of a text
    embedding makes the differences the whole signal, as data-dependent initialisation
    (weight normalisation, LSUV) does for any layer. Same architecture, only weights change."""
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
        merger_out.bias.copy_((merger_out.bias - mean) * scale)
    return {
        "scale": float(scale),
        "mean_norm": float(mean.norm()),
        "spread": float(spread),
        "target": float(target),
    }


def init_answer_tags(model: Any, tokenizer: Any) -> list[str]:
    """Give the answer grammar's six tag tokens the embedding of *a tag*, as a vocabulary extension would.

    The tags never occur in this stage, so their (tied) embeddings stay at random init: a logit
    near zero against trained tokens', about 1e-5 per position, and a model that never samples a
    tag gives GRPO no advantage signal at all (measured: 0 of 96 rollouts). Like the usual
    initialisation of newly added tokens (transformers' ``mean_resizing``: the mean of the
    existing embeddings), each is set to the mean embedding of the tokens of its kind, the
    opening wrapper tags for ``<think>``/``<keyframes>``/``<answer>`` and the closing ones for
    the others, plus its own random init so they stay distinguishable. The model thereby learns
    nothing about the grammar (which tag comes first, what goes inside, the option letter):
    that is left to GRPO. Returns the tags that were set."""
    import torch

    from egovlm.models.tokenizer import ANSWER_TAGS
    from experiments.mini.pretrain_data import WRAP_TAGS

    ids = tokenizer.convert_tokens_to_ids
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        opening = emb[[ids(f"<{t}>") for t in WRAP_TAGS]].mean(0)
        closing = emb[[ids(f"</{t}>") for t in WRAP_TAGS]].mean(0)
        head = model.get_output_embeddings().weight
        for tag in ANSWER_TAGS:
            emb[ids(tag)] += closing if tag.startswith("</") else opening
            if head.data_ptr() != emb.data_ptr():  # an untied head: the same for the output row
                head[ids(tag)] += closing if tag.startswith("</") else opening
    return list(ANSWER_TAGS)


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
    if add_wrap_tokens(processor.tokenizer):  # the instruction-following tags (pretrain_data docstring)
        model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    size = keyframe_size_of(init)
    d = cfg.data
    train_set = build_examples(
        Path(d.train),
        d.frames,
        d.frame_sets,
        size,
        d.seed,
        d.per_set,
        d.max_clips,
        d.tasks,
        d.perception_per_set,
    )
    if not train_set:
        raise ValueError(f"{d.train}: no clips to pre-train on")
    val_set = _val_examples(cfg, size)
    log.info(
        "%d training examples, %d validation examples (%.1f s)",
        len(train_set),
        len(val_set),
        time.perf_counter() - t0,
    )
    text_log = []
    if cfg.text.steps:  # the language model learns to read lettered lists first (pretrain_text)
        text_log = train_text(model, processor.tokenizer, cfg.text, run_dir / "text_log.jsonl")
    vis = cfg.vision
    aux = _AuxLabels(model, Path(d.train), size) if vis.steps or vis.aux_weight else None
    vision_log = []
    if aux is not None and vis.steps:  # the vision tower first, then the merger's output is centred
        from experiments.mini.vision_aux import train_vision

        clips = list(aux.clips.values())[: d.max_clips] if d.max_clips else list(aux.clips.values())
        args = (vis.steps, vis.batch_frames, vis.lr, vis.frames_per_clip, vis.seed)
        vision_log = train_vision(model, processor, aux.head, clips, size, *args)
    if cfg.model.center_visual and not cfg.model.init_from:
        log.info("visual features centred: %s", center_visual_features(model, processor, train_set))
    history = train_loop(model, processor, train_set, val_set, cfg, run_dir / "log.jsonl", aux)
    if aux is not None:
        aux.remove()
    info = {
        "steps": cfg.optim.steps,
        "examples": len(train_set),
        "data": d.train,
        "final_train_loss": history["train"][-1][1] if history["train"] else None,
        "vision": vision_log,
        "text": text_log,
        **({k: v for k, v in history["val"][-1].items() if k != "step"} if history["val"] else {}),
    }
    if cfg.model.init_from:
        info["continued_from"] = cfg.model.init_from
    elif not d.perception_per_set:  # the answer tags never occurred in training (init_answer_tags)
        info["answer_tags_initialised"] = init_answer_tags(model, processor.tokenizer)
    save_model(model, processor, init, run_dir / "final", info)
    summary = {**info, "wall_time_s": round(time.perf_counter() - t0, 1), "final_dir": str(run_dir / "final")}
    atomic_write_text(run_dir / "run.json", json.dumps(summary, indent=2) + "\n")
    plot_pretrain(run_dir / "log.jsonl", run_dir / "curves.png")
    return summary


class _AuxLabels:
    """The vision head (:mod:`experiments.mini.vision_aux`) and its labels per frame set, computed once."""

    def __init__(self, model: Any, folder: Path, size: tuple[int, int]) -> None:
        from experiments.mini.pretrain_data import load_truth
        from experiments.mini.vision_aux import MERGE, VisionAux, object_names

        self.names = object_names()
        self.clips = {c.clip_id: c for c in load_truth(folder)}
        self.size = size
        self.head = VisionAux(model, len(self.names), (size[0] // MERGE) * (size[1] // MERGE))
        self._cache: dict[tuple[str, tuple[float, ...]], tuple[Any, Any]] = {}

    def labels(self, ex: TrainExample) -> tuple[Any, Any]:
        import torch

        from experiments.mini.vision_aux import frame_labels

        key = (ex.clip_id, tuple(f.timestamp_s for f in ex.frames))
        if key not in self._cache:
            cells, held = frame_labels(self.clips[ex.clip_id], ex.frames, self.size)
            self._cache[key] = (torch.from_numpy(cells.reshape(-1, len(self.names))), torch.from_numpy(held))
        return self._cache[key]

    def loss(self, batch: list[TrainExample]) -> Any:
        import torch

        pairs = [self.labels(ex) for ex in batch]
        return self.head.loss(torch.cat([c for c, _ in pairs]), torch.cat([h for _, h in pairs]))

    def remove(self) -> None:
        self.head.remove()


def _weighted(aux: _AuxLabels, batch: list[TrainExample], weight: float) -> Any:
    return aux.loss(batch) * weight


def train_loop(
    model: Any,
    processor: Any,
    train_set: list[TrainExample],
    val_set: list[TrainExample],
    cfg: PretrainConfig,
    log_path: Path,
    aux: _AuxLabels | None = None,
) -> dict[str, Any]:
    """AdamW steps over shuffled batches; validation before the first step, every ``eval_every``
    steps and at the end. With ``aux`` the vision head's loss is added at ``vision.aux_weight``;
    with ``text.mix_batch`` lookup drills' loss at ``text.mix_weight`` (:class:`DrillMix`)."""
    import torch

    o = cfg.optim
    torch.manual_seed(o.seed)
    rng = np.random.default_rng(o.seed)
    opt = _optimizer(model, o, aux.head.parameters() if aux else [])
    pad_id = processor.tokenizer.pad_token_id
    drills = DrillMix(processor.tokenizer, cfg.text) if cfg.text.mix_batch else None
    history: dict[str, Any] = {"train": [], "val": []}
    log_path.unlink(missing_ok=True)
    if val_set:
        _validate(model, processor, val_set, 0, history, log_path, drills)
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
        if drills:
            extras["drill_loss"] = functools.partial(drills.loss, model)
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
        if val_set and ((step + 1) % o.eval_every == 0 or last):
            _validate(model, processor, val_set, step + 1, history, log_path, drills)
    return history


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


def _step(
    model: Any,
    opt: Any,
    batch: dict[str, Any],
    lr: float,
    o: PretrainOptim,
    extras: dict[str, Callable[[], Any]],
) -> dict[str, float]:
    """One AdamW step on the language loss (:func:`weighted_loss`, logged as ``loss``) plus each of
    ``extras`` (called after the forward pass: the vision head reads the visual tokens it captured);
    returns every loss by name."""
    import torch

    for group in opt.param_groups:
        group["lr"] = lr * group["scale"]
    logits = model(**model_inputs(batch, "labels")).logits
    losses = {"loss": weighted_loss(logits, batch["labels"], batch["answer_at"], o.answer_weight)}
    losses |= {name: extra() for name, extra in extras.items()}
    opt.zero_grad(set_to_none=True)
    torch.stack(list(losses.values())).sum().backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], o.grad_clip)
    opt.step()
    return {name: float(loss.detach()) for name, loss in losses.items()}


def _validate(
    model: Any,
    processor: Any,
    val_set: list[TrainExample],
    step: int,
    history: dict[str, Any],
    log_path: Path,
    drills: DrillMix | None = None,
) -> None:
    matched, letters = mean_loss(model, processor, val_set, shuffled=False)
    shuffled, letters_shuffled = mean_loss(model, processor, val_set, shuffled=True)
    val: dict[str, float | None] = {"step": step, "val_loss": matched, "val_loss_shuffled_frames": shuffled}
    if letters is not None:
        val |= {"val_letter_accuracy": letters, "val_letter_accuracy_shuffled_frames": letters_shuffled}
    if drills is not None:  # held-out lookup drills (pretrain_text), chance 20%
        val["drill_letter_accuracy"] = drills.accuracy(model)
    history["val"].append(val)
    _append(log_path, val)
    log.info(
        "step %d val %.3f (another clip's frames %.3f); option letters right %s (another clip's %s)",
        step,
        matched,
        shuffled,
        "-" if letters is None else f"{letters:.1%}",
        "-" if letters_shuffled is None else f"{letters_shuffled:.1%}",
    )


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def plot_pretrain(log_path: Path, out: Path) -> Path:
    """Training loss and the two validation losses over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
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
    ax.set_title("base stage: descriptions of EgoSynth frames")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
