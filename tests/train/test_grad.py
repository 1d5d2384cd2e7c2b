"""The pixels reach the GRPO loss: one GRPO step on the images column puts a non-zero gradient
on the vision tower's parameters (TRL's video path would leave them at zero,
docs/architecture.md#dependency-facts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from egovlm.train.config import load_config
from egovlm.train.rewards import completion_text
from egovlm.train.trainer import build_trainer, vision_tower

REPO = Path(__file__).resolve().parents[2]


def varied_reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
    """Differs between completions of a group, so GRPO advantages (and gradients) are non-zero;
    a random-init model would earn all-zero task rewards."""
    return [float(len(completion_text(c)) % 5) for c in completions]


class GradProbe:
    """Records, just before the optimizer step, the gradient norms of the vision tower."""

    def __init__(self) -> None:
        self.vision: list[float] = []
        self.language: float = 0.0

    def __getattr__(self, name: str) -> Any:  # the other callback events: no-ops
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
        self.vision = [
            float(p.grad.norm()) if p.grad is not None else 0.0 for p in vision_tower(model).parameters()
        ]
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        lm = base.model.language_model.layers[0].self_attn.q_proj.weight
        self.language = float(lm.grad.norm()) if lm.grad is not None else 0.0


def one_step(tmp_path: Path, data: Path, model_dir: Path, *extra: str) -> GradProbe:
    cfg = load_config(
        REPO / "configs" / "tiny_cpu.yaml",
        [
            f"run.output_dir={tmp_path / 'run'}",
            f"model.path={model_dir}",
            f"data.train={data}",
            "grpo.max_steps=1",
            "grpo.save_strategy=no",
            "grpo.beta=0.0",
            "grpo.max_completion_length=16",
            *extra,
        ],
    )
    probe = GradProbe()
    trainer = build_trainer(cfg, "cpu", callbacks=[probe], rewards=([varied_reward], [1.0]))
    trainer.train()
    return probe


def test_grpo_step_puts_gradient_on_the_vision_tower(
    tmp_path: Path, fixture_data: Path, tiny_model_dir: Path
) -> None:
    probe = one_step(tmp_path, fixture_data, tiny_model_dir)
    assert probe.language > 0, "no gradient at all: the step did not train"
    assert probe.vision, "vision tower has no parameters?"
    assert sum(probe.vision) > 0, "the vision tower got no gradient: pixels never reached the loss"
    # Not just the merger: the patch embedding (the first layer to see pixels) gets gradient too.
    assert probe.vision[0] > 0


def test_freeze_vision_leaves_the_tower_without_gradient(
    tmp_path: Path, fixture_data: Path, tiny_model_dir: Path
) -> None:
    probe = one_step(tmp_path, fixture_data, tiny_model_dir, "model.freeze_vision=true")
    assert probe.language > 0
    assert sum(probe.vision) == 0


def test_lora_on_vision_modules_gets_gradient(
    tmp_path: Path, fixture_data: Path, tiny_model_dir: Path
) -> None:
    probe = one_step(
        tmp_path,
        fixture_data,
        tiny_model_dir,
        "lora.enabled=true",
        r"lora.target_modules=.*visual.*\.(qkv|proj)",
    )
    assert probe.language == 0  # the language model is frozen (its q_proj has no adapter here)
    assert sum(probe.vision) > 0  # only the LoRA A/B matrices inside the tower are trainable
