"""Check a recipe against this machine before any model is built.

A recipe written for 8 GPUs run on a laptop should fail in one second with a list of what is
missing (no CUDA, no bitsandbytes, no vLLM, no DeepSpeed, a batch that does not divide), not
after minutes of loading with a stack trace from deep inside a library. Every problem found is
reported at once.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from egovlm.train.config import ConfigError, TrainConfig, check_batch


class PreflightError(RuntimeError):
    """The recipe cannot run here; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} cannot run on this machine:\n{lines}")


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def world_size() -> int:
    """Processes in this launch (accelerate/torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def uses_deepspeed(cfg: TrainConfig) -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" or bool(cfg.grpo.get("deepspeed"))


def resolve_device(cfg: TrainConfig) -> str:
    if cfg.run.device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return cfg.run.device


def _gpu_problems(cfg: TrainConfig, cuda: bool) -> list[str]:
    out = []
    if cfg.run.device == "cuda" and not cuda:
        out.append(
            "run.device is cuda but no CUDA GPU is visible (torch.cuda.is_available() is False); "
            "for a CPU smoke test use configs/tiny_cpu.yaml or run.device=cpu"
        )
    if cfg.model.load_in_4bit:
        if not has_module("bitsandbytes"):
            out.append(
                "model.load_in_4bit needs bitsandbytes: pip install -c constraints.txt 'egovlm[train]'"
            )
        if not cuda:
            out.append("model.load_in_4bit (QLoRA NF4) needs a CUDA GPU; none is visible")
    if cfg.grpo.get("use_vllm"):
        if not has_module("vllm"):
            out.append(
                "grpo.use_vllm needs vLLM (GPU hosts): pip install 'egovlm[multi-gpu]' "
                "or set grpo.use_vllm=false"
            )
        if not cuda:
            out.append("grpo.use_vllm needs a CUDA GPU; none is visible")
    if uses_deepspeed(cfg) and not has_module("deepspeed"):
        out.append("this launch uses DeepSpeed but it is not installed: pip install 'egovlm[multi-gpu]'")
    if (cfg.model.attn_implementation or "").startswith("flash_attention") and not has_module("flash_attn"):
        out.append(f"model.attn_implementation={cfg.model.attn_implementation} needs the flash-attn package")
    if cuda and cfg.grpo.get("bf16", True) and cfg.run.device != "cpu":
        import torch

        if not torch.cuda.is_bf16_supported():
            out.append("grpo.bf16 needs an Ampere or newer GPU; set grpo.bf16=false grpo.fp16=true")
    return out


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _input_problems(cfg: TrainConfig) -> list[str]:
    out = []
    model = Path(cfg.model.path).expanduser()
    looks_local = (
        model.exists() or cfg.model.path.startswith((".", "/", "~")) or cfg.model.path.count("/") != 1
    )
    if looks_local and not model.exists() and cfg.model.build_if_missing is None:
        out.append(
            f"model.path {model} does not exist (set model.build_if_missing to build an offline model)"
        )
    elif model.exists():
        from egovlm.models.loading import ModelLoadError, check_model_dir

        try:
            check_model_dir(model)
        except ModelLoadError as e:
            out.append(str(e))
    elif not looks_local and _offline() and not _hub_cached(cfg.model.path):
        out.append(f"model.path {cfg.model.path} is a hub id, not in the local cache, and the hub is offline")
    data = Path(cfg.data.train)
    if not data.is_file():
        if cfg.data.synth is None:
            out.append(f"data.train {data} does not exist (set data.synth to generate EgoSynth there)")
        elif not has_module("egovlm.synth"):
            out.append(
                "data.synth needs the EgoSynth generator (egovlm.synth), which is not in this checkout"
            )
    if cfg.data.sampling == "salient" and not has_module("egovlm.keyframes"):
        out.append(
            "data.sampling=salient needs the keyframe selector egovlm.keyframes; use data.sampling=uniform"
        )
    if cfg.lora.enabled and not has_module("peft"):
        out.append("lora.enabled needs peft: pip install -c constraints.txt 'egovlm[train]'")
    if not has_module("tensorboard"):
        out.append("TensorBoard logging needs tensorboard: pip install -c constraints.txt 'egovlm[train]'")
    return out


def problems(cfg: TrainConfig) -> list[str]:
    cuda = cuda_available()
    out = _gpu_problems(cfg, cuda) + _input_problems(cfg)
    try:
        check_batch(cfg, world_size())
    except ConfigError as e:
        out.append(str(e))
    return out


def check(cfg: TrainConfig) -> str:
    """Raise :class:`PreflightError` listing every problem; return the device to train on."""
    found = problems(cfg)
    if found:
        raise PreflightError(cfg.source, found)
    return resolve_device(cfg)
