"""Generation settings shared by GRPO rollouts and eval.

A completion must never contain the vision placeholder tokens (``<|image_pad|>``,
``<|video_pad|>``, ``<|vision_start|>``, ``<|vision_end|>``): in the loss forward pass TRL
would count a sampled ``<|image_pad|>`` as an image slot, find more slots than image features,
and silently drop *all* images of the batch (its "truncation safety" fallback); a sampled
``<|video_pad|>`` would ask for video features that do not exist. TRL suppresses only
``image_token_id``; we suppress all four, in training and in eval. Trained checkpoints never
emit them, random-init test models often do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from egovlm.choice import AnswerChoiceProcessor, choices_for

VISION_TOKEN_ATTRS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def vision_token_ids(config: Any) -> list[int]:
    ids = [getattr(config, name, None) for name in VISION_TOKEN_ATTRS]
    return sorted({int(i) for i in ids if i is not None})


def suppress_vision_tokens(args: Any, model: Any) -> None:
    """Add the vision tokens to GRPOConfig.generation_kwargs["suppress_tokens"] for transformers
    rollouts. vLLM's SamplingParams has no such field, so with vLLM rollouts this is left to
    the checkpoint (published Qwen2.5-VL weights do not sample these tokens); not verified
    here, since vLLM cannot run on this machine."""
    if getattr(args, "use_vllm", False):
        return
    kwargs = dict(args.generation_kwargs or {})
    kwargs["suppress_tokens"] = sorted(
        set(kwargs.get("suppress_tokens") or []) | set(vision_token_ids(model.config))
    )
    args.generation_kwargs = kwargs


def greedy(
    model: Any,
    processor: Any,
    messages: list[Any],
    images: list[list[Any]],
    max_new_tokens: int,
    options: Sequence[Mapping[str, str] | None] | None = None,
) -> list[str]:
    """Greedy completions for a batch of contract prompts (left-padded). ``options``: per prompt,
    the question's options, whose answers are then restricted to them (:mod:`egovlm.choice`)."""
    return _generate(model, processor, messages, images, max_new_tokens, options, do_sample=False)


def sampled(
    model: Any,
    processor: Any,
    messages: list[Any],
    images: list[list[Any]],
    max_new_tokens: int,
    n: int,
    temperature: float,
    options: Sequence[Mapping[str, str] | None] | None = None,
) -> list[list[str]]:
    """``n`` completions per prompt sampled at ``temperature`` (top-k and top-p off, as GRPO's
    rollouts sample): ``out[i]`` are prompt ``i``'s. Seed torch first for a repeatable draw.
    ``options`` as in :func:`greedy`."""
    texts = _generate(
        model,
        processor,
        messages,
        images,
        max_new_tokens,
        options,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        num_return_sequences=n,
    )
    return [texts[i * n : (i + 1) * n] for i in range(len(messages))]


def _generate(
    model: Any,
    processor: Any,
    messages: list[Any],
    images: list[list[Any]],
    max_new_tokens: int,
    options: Sequence[Mapping[str, str] | None] | None,
    **kwargs: Any,
) -> list[str]:
    import torch

    texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    processor.tokenizer.padding_side = "left"
    inputs = processor(text=texts, images=images, padding=True, return_tensors="pt").to(model.device)
    if options is not None:
        from transformers import LogitsProcessorList

        choices = choices_for(processor.tokenizer, options)
        n = int(kwargs.get("num_return_sequences", 1))
        kwargs["logits_processor"] = LogitsProcessorList(
            [AnswerChoiceProcessor(choices, inputs["input_ids"].shape[1], n)]
        )
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            suppress_tokens=vision_token_ids(model.config),
            **kwargs,
        )
    new = out[:, inputs["input_ids"].shape[1] :]
    return [str(t) for t in processor.batch_decode(new, skip_special_tokens=True)]
