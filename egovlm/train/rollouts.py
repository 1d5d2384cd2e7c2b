"""Rollouts that cannot profit from letter habits: per-rollout option shuffles and uniform groups.

Two switches in the recipe's ``rollouts:`` section (:class:`egovlm.train.config.RolloutsSection`),
both off by default; the trainer (:mod:`egovlm.train.trainer`) applies them around TRL's
``GRPOTrainer._generate_and_score_completions``.

**Options shuffled per rollout** (``shuffle_options``). TRL's ``RepeatSampler`` puts a question's
``num_generations`` copies next to each other in the global generation batch (process ``p`` holds
positions ``p × local_size …``), so copy ``r`` of a group is rollout ``r``. Before generation every
copy of a multiple-choice row is rewritten: the option texts move, the letters stay ``A..`` in order,
the ground-truth letter (``answer``) and ``option_texts`` move with the texts, and the question block
of the prompt is re-rendered with the contract's :func:`egovlm.contract.question_text`, so the
prompt grammar stays the contract's. The rewards read ``answer`` and ``option_texts`` from the
rewritten row, so each rollout is scored against its own permutation's gold letter; the keyframe
reward does not depend on the options. Open questions (no options) are left as they are.

The permutations of one group (:func:`group_orders`) are a pure function of (seed, step, question
id): rollout ``r`` takes the ``r``-th, so a permutation is fixed by (grpo seed, global step, question
id, rollout index) and a resumed run draws the same ones. Within a group the gold text visits every
letter in turn (a random order of letters, repeated), and no two rollouts share a permutation while
``num_generations <= n!``: a policy that always answers one letter is right on exactly ``1/n`` of
every group (±1 rollout), so a letter habit earns no advantage.

**Uniform groups** (``drop_uniform_groups``). A group whose rewards (the weighted sum TRL
normalises) are all equal carries no advantage. Their fraction is logged every generation batch as
:data:`UNIFORM_METRIC` (unlike TRL's ``frac_reward_zero_std``, per group whatever
``grpo.scale_rewards`` is). With the switch on, their completions are masked out of the loss
(``completion_mask`` 0, the same mechanism as TRL's ``mask_truncated_completions``) and the token
count that normalises TRL's ``dapo`` loss is recomputed, so they neither push the policy nor dilute
the informative groups' gradient (nor add KL). This is DAPO's dynamic sampling without its
resampling: TRL 1.16 has no option for either (no dynamic-sampling flag in ``GRPOConfig``). To keep
the informative groups per step up, generate more groups per step (``per_device_train_batch_size``
/ ``num_generations``) than the steps need.

**Citation credit** (``citation_credit: keyframe``; default ``shared``). TRL gives every token of a
completion one advantage, from the weighted sum of all rewards, so the tokens that cite frames are
credited mostly by whether the *answer* was right (the accuracy reward dominates the sum's spread)
and the keyframe reward's signal about *which frames* drowns in it. With the switch the tokens of
the ``<keyframes>`` block (the frame numbers and the closing tag: what is cited and how many) take
the keyframe reward's own group advantage, scaled by its weight (:func:`split_advantages`), and
every other token the advantage of the other rewards, normalised as TRL normalises the sum
(``grpo.scale_rewards``). The loss then uses a per-token advantage (TRL's ``_compute_loss`` accepts
one of shape (rows, tokens)). A completion the keyframe reward cannot measure (``None``) gives its
citation no advantage. The block's tokens are found on the decoded text (:func:`citation_token_mask`),
so any BPE merge around the tags is handled. TRL's logged ``advantages`` stay the shared ones.

**Masked rows are not forwarded** (always on where it is exact). A completion whose loss mask is all
zero (a dropped uniform group, or a truncated completion under TRL's ``mask_truncated_completions``)
adds exactly nothing to a loss that sums unmasked tokens over a normaliser that does not count rows
(:data:`ROW_FREE_LOSSES`), so the trainer leaves such rows out of the loss's forward and backward
(:func:`rows_with_loss`, :func:`select_rows`). With half the groups uniform this halves the most
expensive part of a step; the loss, gradient and logged metrics are the ones the full batch gives
(``tests/train/test_rollouts.py``).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from egovlm.contract import Message, question_text

UNIFORM_METRIC = "uniform_group_fraction"
CREDITED_METRIC = "credited_citation_tokens"  # logged with citation_credit: keyframe, per completion
CITATION_CREDITS = ("shared", "keyframe")
EXPLORED_METRIC = "explored_citations"  # logged: citation positions explored per completion
UNIFORM_TOLERANCE = 1e-6  # rewards closer than this count as equal

Order = tuple[int, ...]  # order[j]: the original index of the option shown at letter j


def group_orders(n: int, gold: int | None, group_size: int, key: str) -> list[Order]:
    """The option orders of one question's ``group_size`` rollouts (module docstring).

    ``gold`` is the original index of the correct option (None: unanswered, option 0 is spread
    instead). Rollout ``r``'s gold letter is the ``r mod n``-th of a random order of the ``n``
    letters; the other options fill the remaining letters in an arrangement not yet used with that
    gold letter. ``key`` seeds the draw (``random.Random`` hashes a string seed the same way in every
    process and Python version)."""
    if n < 1 or group_size < 1:
        raise ValueError(f"need options and rollouts, got n={n}, group_size={group_size}")
    rng = random.Random(key)
    anchor = 0 if gold is None else gold
    others = [i for i in range(n) if i != anchor]
    slots = rng.sample(range(n), n)
    every = list(itertools.permutations(others))
    arrangements = {slot: rng.sample(every, math.factorial(n - 1)) for slot in slots}
    used: Counter[int] = Counter()
    out: list[Order] = []
    for r in range(group_size):
        slot = slots[r % n]
        rest = list(arrangements[slot][used[slot] % len(arrangements[slot])])
        used[slot] += 1
        rest.insert(slot, anchor)
        out.append(tuple(rest))
    return out


def order_key(seed: int, step: int, question_id: str) -> str:
    """The seed string of a group's orders: the same in a resumed run and on every process."""
    return f"egovlm-rollouts/{seed}/{step}/{question_id}"


def rerender_question(
    prompt: Sequence[Message], question: str, before: Mapping[str, str], after: Mapping[str, str]
) -> list[Message]:
    """``prompt`` with its question block rendered for the options ``after`` instead of ``before``.

    The block is the last content item of the last user message (:func:`egovlm.contract.build_messages`
    puts it there); it must read exactly ``question_text(question, before)``, or the prompt was not
    built by the contract and rewriting it could change more than the options."""
    users = [i for i, m in enumerate(prompt) if m.get("role") == "user"]
    content = prompt[users[-1]].get("content") if users else None
    expected = question_text(question, before)
    if not isinstance(content, list) or not content or content[-1].get("text") != expected:
        raise ValueError(
            "cannot shuffle the options: the prompt's last user item is not the contract's question block "
            f"(egovlm.contract.question_text) for question {question!r}"
        )
    out = list(prompt)
    block = {**content[-1], "text": question_text(question, after)}
    out[users[-1]] = {**prompt[users[-1]], "content": [*content[:-1], block]}
    return out


def shuffle_row(row: Mapping[str, Any], order: Order) -> dict[str, Any]:
    """A copy of a training row (:func:`egovlm.train.dataset.row`) whose letter ``j`` shows the
    option originally at ``order[j]``: prompt, ``option_texts`` and ``answer`` rewritten together."""
    letters: str = row["letters"]
    texts: list[str] = list(row["option_texts"])
    if sorted(order) != list(range(len(letters))) or len(texts) != len(letters):
        raise ValueError(f"row {row.get('id')!r}: order {order} does not fit options {letters!r}")
    moved = [texts[i] for i in order]
    prompt = rerender_question(
        row["prompt"],
        row["question"],
        dict(zip(letters, texts, strict=True)),
        dict(zip(letters, moved, strict=True)),
    )
    answer = row.get("answer")
    if answer is not None:
        answer = letters[order.index(letters.index(answer))]
    return {**row, "prompt": prompt, "option_texts": moved, "answer": answer}


def shuffle_batch(
    inputs: Sequence[Mapping[str, Any]], group_size: int, seed: int, step: int, offset: int = 0
) -> tuple[list[dict[str, Any]], list[str | None]]:
    """Each multiple-choice row of a (local part of a) generation batch, rewritten for its rollout.

    ``offset`` is the batch's first position in the global generation batch (TRL: process index x
    local size); position ``offset + i`` is rollout ``(offset + i) mod group_size`` of its group.
    Returns the rows and, per row, its order as the original letters shown at ``A..`` (``"CABED"``:
    letter A shows what was option C), None for a row left as it was."""
    rows: list[dict[str, Any]] = []
    orders: list[str | None] = []
    plans: dict[int, list[Order]] = {}
    for i, x in enumerate(inputs):
        group, rollout = divmod(offset + i, group_size)
        if i > 0 and (offset + i - 1) // group_size == group and inputs[i - 1].get("id") != x.get("id"):
            raise RuntimeError(
                f"rows {x.get('id')!r} and {inputs[i - 1].get('id')!r} share a rollout group: the generation "
                "batch is not laid out as TRL's RepeatSampler lays it out"
            )
        letters, texts = x.get("letters"), x.get("option_texts")
        if not letters or not texts:
            rows.append(dict(x))
            orders.append(None)
            continue
        if group not in plans:
            answer = x.get("answer")
            gold = letters.index(answer) if answer is not None and answer in letters else None
            plans[group] = group_orders(
                len(letters), gold, group_size, order_key(seed, step, str(x.get("id")))
            )
        order = plans[group][rollout]
        rows.append(shuffle_row(x, order))
        orders.append("".join(letters[k] for k in order))
    return rows, orders


def uniform_groups(rewards_per_func: Any, weights: Any, group_size: int) -> Any:
    """Per group (consecutive ``group_size`` rows), whether its weighted rewards are all equal.

    ``rewards_per_func`` is TRL's (completions x reward functions) tensor, NaN where a reward does
    not apply; a completion no reward applies to is left out, and a group of such completions
    counts as uniform (it has no signal either)."""
    import torch

    total = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    total = torch.where(torch.isnan(rewards_per_func).all(dim=1), torch.nan, total)
    grouped = total.view(-1, group_size)
    missing = torch.isnan(grouped)
    hi = torch.where(missing, -torch.inf, grouped).amax(dim=1)
    lo = torch.where(missing, torch.inf, grouped).amin(dim=1)
    return ~(hi - lo > UNIFORM_TOLERANCE)


def drop_completions(output: dict[str, Any], drop: Any, gather: Callable[[Any], Any]) -> None:
    """Mask the completions ``drop`` (one bool per local row) out of TRL's loss, in place.

    ``completion_mask`` (and ``tool_mask``) rows become 0 and their advantages 0; the batch's token
    count ``num_items_in_batch`` (the ``dapo`` loss's normaliser, summed over processes with
    ``gather``) is recomputed from the new mask, as TRL computes it."""
    keep = (~drop).to(output["completion_mask"].dtype)
    output["completion_mask"] = output["completion_mask"] * keep.unsqueeze(1)
    loss_mask = output["completion_mask"]
    if output.get("tool_mask") is not None:
        output["tool_mask"] = output["tool_mask"] * keep.unsqueeze(1)
        loss_mask = loss_mask * output["tool_mask"]
    advantages = output["advantages"]
    output["advantages"] = advantages * keep.to(advantages.dtype).view(-1, *([1] * (advantages.dim() - 1)))
    output["num_items_in_batch"] = gather(loss_mask.sum()).sum()


def group_advantages(values: Any, group_size: int, scale: str) -> Any:
    """``values`` (one per completion, NaN: no signal) minus their group's mean, divided by the
    group's (``scale`` "group") or the batch's ("batch") standard deviation, or not ("none"): TRL's
    ``sum_then_normalize`` arithmetic for one reward. NaN rows get 0."""
    import torch
    from trl.trainer.utils import nanstd

    grouped = values.view(-1, group_size)
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (nanstd(grouped, dim=1).unsqueeze(1) + 1e-4)
    elif scale == "batch":
        centred = centred / (nanstd(values) + 1e-4)
    elif scale != "none":
        raise ValueError(f"scale_rewards must be group, batch or none, got {scale!r}")
    return torch.nan_to_num(centred.reshape(-1), nan=0.0)


def split_advantages(
    rewards_per_func: Any, weights: Any, keyframe: int, group_size: int, scale: str
) -> tuple[Any, Any]:
    """(answer advantages, citation advantages), one per completion, for ``citation_credit: keyframe``.

    The answer's is TRL's advantage of the weighted sum of every reward but column ``keyframe``
    (NaN where none of them applies); the citation's is the keyframe reward's own group advantage
    times its weight (0 where the reward is None/NaN). ``rewards_per_func`` is TRL's (completions x
    reward functions) tensor over all processes, groups of ``group_size`` consecutive rows."""
    import torch

    others = torch.ones(rewards_per_func.shape[1], dtype=torch.bool, device=rewards_per_func.device)
    others[keyframe] = False
    rest_funcs = rewards_per_func[:, others]
    rest = (rest_funcs * weights[others].unsqueeze(0)).nansum(dim=1)
    rest = torch.where(torch.isnan(rest_funcs).all(dim=1), torch.nan, rest)
    cite = weights[keyframe] * group_advantages(rewards_per_func[:, keyframe].clone(), group_size, scale)
    return group_advantages(rest, group_size, scale), cite


def citation_token_mask(tokenizer: Any, completion_ids: Any, completion_mask: Any) -> Any:
    """Per completion token, whether it belongs to the first ``<keyframes>`` block's body or its
    closing tag (tag case ignored, as the contract's parser ignores it). Found on the decoded text:
    token ``j`` counts when the characters it adds overlap the span, so the tags may merge with
    neighbouring characters into any tokens. A block that is never closed credits nothing (the
    format reward already scores it). Rows past the completion mask are False."""
    import torch

    mask = torch.zeros(completion_ids.shape, dtype=torch.bool, device=completion_ids.device)
    open_tag, close_tag = "<keyframes>", "</keyframes>"
    for row, (ids, live) in enumerate(zip(completion_ids.tolist(), completion_mask.tolist(), strict=True)):
        n = max((j + 1 for j, m in enumerate(live) if m), default=0)
        prefixes = [tokenizer.decode(ids[: j + 1], skip_special_tokens=False) for j in range(n)]
        ends = [len(t) for t in prefixes]
        text = prefixes[-1].lower() if prefixes else ""
        start = text.find(open_tag)
        close = text.find(close_tag, start + len(open_tag)) if start >= 0 else -1
        if close < 0:
            continue
        lo, hi = start + len(open_tag), close + len(close_tag)
        for j in range(n):
            begin = ends[j - 1] if j else 0
            if begin < hi and ends[j] > lo:
                mask[row, j] = True
    return mask


# TRL loss types whose loss is (per-token loss x mask).sum() over a normaliser that does not count
# rows (``num_items_in_batch`` or the mask's own sum): a row whose mask is all zero contributes exactly
# nothing. ``grpo``, ``sapo``, ``dr_grpo`` and ``luspo`` average over rows, so every row counts there.
ROW_FREE_LOSSES = frozenset({"dapo", "bnpo", "cispo", "vespo"})


def rows_with_loss(inputs: dict[str, Any]) -> Any:
    """Indices of the rows whose loss mask (``completion_mask`` x ``tool_mask``) has a token, or None
    when every row has one. When no row has one, row 0 is kept: the step still runs a forward and a
    backward (zero gradient), as every process of a distributed run must."""
    import torch

    mask = inputs["completion_mask"]
    if inputs.get("tool_mask") is not None:
        mask = mask * inputs["tool_mask"]
    live = mask.sum(dim=1) > 0
    if bool(live.all()):
        return None
    index = live.nonzero().flatten()
    return index if index.numel() else torch.zeros(1, dtype=torch.long, device=mask.device)


def pad_rows(index: Any, n: int, target: int) -> Any:
    """``index`` (rows with a loss token, None: all ``n``) widened to ``target`` rows with the first
    rows not in it, which have no loss token and so change nothing; None when ``target >= n``. In a
    distributed run every process forwards the same number of rows (the most any process keeps):
    TRL gathers per-row loss metrics across processes, which needs equal shapes."""
    import torch

    if index is None or target >= n:
        return None
    if index.numel() >= target:
        return index
    kept = set(index.tolist())
    extra = [i for i in range(n) if i not in kept][: target - index.numel()]
    return torch.tensor(sorted(kept.union(extra)), dtype=torch.long, device=index.device)


def select_rows(inputs: dict[str, Any], index: Any) -> dict[str, Any]:
    """The rows ``index`` of a TRL loss batch: every tensor with a first dimension and every list is
    per row (the same assumption as TRL's ``split_tensor_dict``); 0-d tensors and other values are
    batch-wide and kept. ``pixel_values`` / ``image_grid_thw`` are split per row with TRL's own
    helpers first (a row owns a variable number of patch rows)."""
    import torch
    from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

    batch = split_pixel_values_by_grid(inputs)
    n = int(inputs["completion_ids"].shape[0])
    rows = index.tolist()
    picked: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            if value.shape[0] != n:
                raise ValueError(
                    f"loss batch field {key!r} has {value.shape[0]} rows, not one per completion ({n})"
                )
            picked[key] = value[index.to(value.device)]
        elif isinstance(value, list):
            if len(value) != n:
                raise ValueError(
                    f"loss batch field {key!r} has {len(value)} entries, not one per completion ({n})"
                )
            picked[key] = [value[i] for i in rows]
        else:
            picked[key] = value
    return unsplit_pixel_values_by_grid(picked)


class CitationExplorer:
    """Epsilon-uniform exploration of the cited frames in rollouts (``rollouts.explore_citations``).

    A ``transformers`` logits processor for GRPO's rollouts only. Inside an open ``<keyframes>`` block,
    at each position where the policy's most likely next token is a frame number, the sampling
    distribution becomes ``(1 - epsilon) * p + epsilon * uniform(frame numbers 1..n)``: with
    probability ``epsilon`` that citation is a frame drawn at random. How many frames are cited, and
    everything outside the block, stay the policy's.

    Why: the keyframe reward can only pay a group whose rollouts cite differently. A policy that
    carries a habit over to a question type it was never taught (on EgoSynth the base cites frame 1
    for "where did X end up?" in every sample at temperature 0.8) gives every rollout of such a
    group the same keyframe reward, so no advantage ever points at the right frame. With exploration
    some rollouts cite other frames; those that hit the salient frame with a correct answer earn the
    reward, and their citation tokens get the positive advantage. The explored tokens are trained as
    if sampled from the policy (TRL's loss uses the policy's log-probabilities; with
    ``num_iterations: 1`` its ratio is 1), the usual off-policy shortcut of epsilon-greedy exploration:
    biased toward the explored frames only by what the advantage says about them.

    Frame numbers are the tokenizer's single-token spellings of ``1..min(n, 9)``, with and without a
    leading space (a BPE that merges ``" 5"`` has a second class of them); the uniform draw stays in
    the class of the policy's top token, so the citation's spelling is the policy's. A position right
    after a digit (the second digit of ``12``) is not explored, so numbers above 9 are cited only as
    the policy writes them. ``frames[i]`` is prompt ``i``'s frame count; rows are prompts in order
    (TRL repeats each prompt ``num_generations`` times itself). ``temperature`` is the sampling
    temperature ``generate`` applies after this processor: the mixture is formed on the distribution
    actually sampled from."""

    OPEN = "<keyframes>"
    CLOSE = "</keyframes>"

    def __init__(
        self,
        tokenizer: Any,
        frames: Sequence[int],
        epsilon: float,
        temperature: float = 1.0,
        prompt_len: int | None = None,
    ) -> None:
        from egovlm.choice import token_ids

        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"citation exploration must be in [0, 1], got {epsilon}")
        if temperature <= 0:
            raise ValueError(f"citation exploration needs a sampling temperature > 0, got {temperature}")
        self.open = token_ids(tokenizer, self.OPEN)
        self.close = token_ids(tokenizer, self.CLOSE)
        self.frames = list(frames)
        self.epsilon = epsilon
        self.temperature = temperature
        self.prompt_len = prompt_len
        # class -> {frame number: token id}, for the spellings that are one token
        self.classes: list[dict[int, int]] = []
        for prefix in ("", " "):
            spelled = {k: token_ids(tokenizer, f"{prefix}{k}") for k in range(1, 10)}
            one = {k: ids[0] for k, ids in spelled.items() if len(ids) == 1}
            if one:
                self.classes.append(one)
        self.digits = {ids[0] for d in range(10) if len(ids := token_ids(tokenizer, str(d))) == 1}
        self.digits.update(t for c in self.classes for t in c.values())
        self.explored = 0  # positions where the mixture applied (logged as EXPLORED_METRIC per completion)

    def candidates(self, generated: Sequence[int], top: int, n: int) -> list[int] | None:
        """The frame-number tokens to mix in at this position, or None where nothing is explored."""
        from egovlm.choice import after_last

        start = after_last(generated, self.open)
        if start is None or after_last(generated[start:], self.close) is not None:
            return None  # no block open
        if len(generated) > start and generated[-1] in self.digits:
            return None  # inside a number
        for cls in self.classes:
            if top in cls.values():
                return [cls[k] for k in range(1, min(n, 9) + 1) if k in cls]
        return None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if input_ids.shape[0] != len(self.frames):
            raise ValueError(f"{input_ids.shape[0]} rows generated for {len(self.frames)} prompts")
        if self.prompt_len is None:
            self.prompt_len = int(input_ids.shape[1])
        if self.epsilon == 0.0:
            return scores
        for row in range(input_ids.shape[0]):
            top = int(scores[row].argmax())
            cands = self.candidates(input_ids[row, self.prompt_len :].tolist(), top, self.frames[row])
            if not cands:
                continue
            p = torch.softmax(scores[row].float() / self.temperature, dim=-1)
            q = (1.0 - self.epsilon) * p
            q[torch.tensor(cands, device=q.device)] += self.epsilon / len(cands)
            scores[row] = (self.temperature * torch.log(q)).to(scores.dtype)
            self.explored += 1
        return scores
