"""``egovlm eval``: greedy answers of a model on a dataset, scored with the contract's parsers.

Frames go through the same frame cache as training (uniform or salient sampling, resized to the
model's keyframe size). Two prompts (``--prompt``):

* ``egovlm`` (default) — the contract's grammar prompt (:func:`egovlm.contract.build_messages`),
  scored by :func:`egovlm.contract.parse_answer`: accuracy, format failures, keyframe F1 (with the
  content-free keyframe baselines computed on the same items, so a keyframe F1 can be judged);
* ``plain`` — the letter-only prompt published EgoSchema numbers for Qwen2.5-VL are measured with
  (:func:`egovlm.contract.build_plain_messages`, lmms-eval's), scored by
  :func:`egovlm.contract.parse_letter`: accuracy only (no format, no keyframes); multiple-choice
  items only.

``--answers options`` (default) restricts a multiple-choice ``<answer>`` to the question's options
(an option's text or its letter; :mod:`egovlm.choice`), the rule the device and GRPO's rollouts
answer under; ``--answers free`` scores whatever the model writes. Each row records its rule.

A dataset may mix multiple-choice and open questions (``options`` None, the answer in words).
Multiple-choice accuracy (``accuracy``, ``per_question_type``) and open accuracy
(``open_accuracy``, ``open_per_question_type``: the words equal the ground truth after
:func:`egovlm.contract.normalize_answer`, i.e. the exact object) are reported side by side, never
pooled. Each row records its ``answer_form`` (``letter`` for a multiple-choice question, ``words``
for an open one) and, for a multiple-choice answer, whether the model wrote the letter or the
option's text (``answered_with``); ``metrics.json`` counts both (``answer_forms``,
``mc_answered_with``).

``max_new_tokens`` defaults to what the model was trained to write: ``--config RECIPE``'s
``grpo.max_completion_length``, else the recipe ``egovlm train`` saved next to the model
(``RUN/config.yaml`` for ``RUN/final``, ``RUN/checkpoint-N``, ``RUN/merged``), else 512 (the 3B
recipe's); the plain prompt uses lmms-eval's 16. ``metrics.json`` records the value and its source.

Several processes: ``accelerate launch --config_file … -m egovlm.cli eval …`` shards the items not
yet done across ranks (``PartialState.split_between_processes``); each rank appends to its own
``completions.rank<R>.jsonl``; after every rank finished, the main process merges them into
``completions.jsonl`` and writes the metrics and the submission. A killed eval resumes (any number
of processes) by skipping the ids in all these files; a torn last line is dropped.

Outputs in ``--out``:

* ``completions.jsonl`` — one row per item (completion, parsed answer, scores);
* ``metrics.json`` — multiple-choice and open accuracy, overall and per question type (items with
  public answers), the prompt, ``max_new_tokens`` and its source, the process count, format-failure
  and no-answer rates, keyframe F1 and its content-free baselines (grammar prompt only: cite all,
  the best fixed position, the best fixed set of positions per question type, and with
  ``prior_data`` the keyframe reward's per-question baseline), the submission summary;
* ``submission.csv`` — when the items include EgoSchema rows or rows without a public answer: the
  EgoSchema competition's format (Kaggle ``egoschema-public``): header ``q_uid,answer``, one row per
  item given (the 500 with public answers too), ``answer`` the 0-based option index. A completion
  with no parsable letter still gets a row, with :data:`NO_LETTER_INDEX` (option A: the competition
  needs an answer for every question, and a fixed guess scores exactly chance); such rows are
  counted in ``metrics.json`` (``submission.no_letter_rows``). Sources for the format: the
  egoschema/EgoSchema README (submissions go to the Kaggle competition ``egoschema-public``) and a
  submission shown in that repository's issue #22 (``q_uid,answer`` then ``<q_uid>,<0..4>`` rows);
  the Kaggle page itself could not be read from here. The repository's older validation server
  (``validate.py``) takes the same answers as JSON ``{q_uid: index}``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from egovlm.atomic import atomic_write_text
from egovlm.choice import ANSWER_RULES
from egovlm.contract import (
    PLAIN_MAX_NEW_TOKENS,
    Message,
    answers_match,
    build_messages,
    build_plain_messages,
    parse_answer,
    parse_letter,
)
from egovlm.schema import QAItem, read_jsonl
from egovlm.train import sampling
from egovlm.train.dataset import FrameSpec, PreparedItem, prepare_item
from egovlm.train.generation import greedy
from egovlm.train.rewards import KeyframeReward, PositionalPrior, f1, salient_set

if TYPE_CHECKING:
    from egovlm.train.config import TrainConfig

COMPLETIONS = "completions.jsonl"
PART = "completions.rank{rank}.jsonl"  # one per process while an eval runs
METRICS = "metrics.json"
SUBMISSION = "submission.csv"
PROMPTS = ("egovlm", "plain")
DEFAULT_MAX_NEW_TOKENS = 512  # configs/egovlm_3b.yaml's grpo.max_completion_length
NO_LETTER_INDEX = 0  # the submission's answer for a completion without a parsable letter
SAVED_RECIPE = "config.yaml"  # what `egovlm train` writes in its run folder


@dataclass
class EvalOptions:
    frames: int = 8
    sampling: str = "uniform"
    batch_size: int = 4
    max_new_tokens: int | None = None  # None: see resolve_max_new_tokens
    prompt: str = "egovlm"  # egovlm (the grammar) or plain (the letter only)
    answers: str = "options"  # options: <answer> restricted to the options (egovlm.choice); free: not
    recipe: Path | None = None  # the training recipe, for max_new_tokens
    device: str = "cpu"
    keyframe_tolerance_s: float | None = None
    selector_k: int = 2
    limit: int | None = None
    cache_dir: Path | None = None
    progress: bool = True
    prior_data: Path | None = (
        None  # training JSONL for the positional keyframe baseline (see resolve_prior_data)
    )


def load_for_eval(model: str, device: str) -> tuple[Any, Any, tuple[int, int]]:
    """(model, processor, keyframe size) from a checkpoint folder, a LoRA adapter folder or a hub id."""
    import torch

    from egovlm.models.loading import keyframe_size_of, load_model
    from egovlm.train.merge import is_adapter, load_merged

    path = Path(model).expanduser()
    if path.is_dir() and is_adapter(path):
        merged, processor, base = load_merged(
            path, dtype=torch.float32 if device == "cpu" else torch.bfloat16
        )
        size = keyframe_size_of(path) if (path / "egovlm.json").is_file() else keyframe_size_of(Path(base))
        return merged.to(device).eval(), processor, size
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    loaded = load_model(model, dtype=dtype, device=device)
    return loaded.model, loaded.processor, loaded.keyframe_size


# --- max_new_tokens ---------------------------------------------------------------------------------


def saved_recipe(model: str) -> tuple[Path, dict[str, Any]] | None:
    """The recipe ``egovlm train`` saved next to a model: ``config.yaml`` (with a ``grpo`` section) in
    the model's folder or its parent (the run folder of ``final/``, ``checkpoint-N/``, ``merged/``).
    Read as plain YAML, not through ``load_config``: an older run's recipe may miss keys added since.
    Unreadable YAML raises :class:`egovlm.config.ConfigError` naming the file and line."""
    from egovlm.config import parse_yaml

    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    for folder in (path, path.parent):
        candidate = folder / SAVED_RECIPE
        if candidate.is_file():
            tree = parse_yaml(candidate)
            if isinstance(tree, dict) and isinstance(tree.get("grpo"), dict):
                return candidate, tree
    return None


def _completion_length(grpo: dict[str, Any], where: str) -> tuple[int, str]:
    if grpo.get("max_completion_length") is not None:
        return int(grpo["max_completion_length"]), f"{where}: grpo.max_completion_length"
    from egovlm.train.config import grpo_default

    return int(
        grpo_default("max_completion_length")
    ), f"{where} leaves it to TRL's default max_completion_length"


def load_recipe(opts: EvalOptions) -> TrainConfig | None:
    """``--config``'s recipe, loaded once per eval (None without ``--config``)."""
    if opts.recipe is None:
        return None
    from egovlm.train.config import load_config

    return load_config(opts.recipe)


def resolve_max_new_tokens(opts: EvalOptions, model: str, recipe: TrainConfig | None) -> tuple[int, str]:
    """(max_new_tokens, where it came from): the flag, the plain prompt's 16, ``--config``'s recipe
    (``recipe``, from :func:`load_recipe`), the recipe saved next to the model, or
    :data:`DEFAULT_MAX_NEW_TOKENS`."""
    if opts.max_new_tokens is not None:
        return opts.max_new_tokens, "--max-new-tokens"
    if opts.prompt == "plain":
        return PLAIN_MAX_NEW_TOKENS, "plain prompt: lmms-eval's EgoSchema max_new_tokens"
    if recipe is not None:
        return _completion_length(recipe.grpo, str(opts.recipe))
    found = saved_recipe(model)
    if found is not None:
        return _completion_length(found[1]["grpo"], str(found[0]))
    return DEFAULT_MAX_NEW_TOKENS, "default: configs/egovlm_3b.yaml's grpo.max_completion_length"


def resolve_prior_data(opts: EvalOptions, recipe: TrainConfig | None) -> Path | None:
    """The training JSONL the positional keyframe baseline is fitted on: ``prior_data``, else with
    ``--config`` the recipe's (``rewards.keyframe_prior_data``, else ``data.train``) when that file
    exists; None skips the baseline."""
    if opts.prior_data is not None:
        return opts.prior_data
    if recipe is None:
        return None
    path = Path(recipe.rewards.keyframe_prior_data or recipe.data.train)
    return path if path.is_file() else None


# --- prompts and scoring ----------------------------------------------------------------------------


def prompt_messages(p: PreparedItem, prompt: str) -> list[Message]:
    if prompt == "plain":
        if p.item.options is None:
            raise ValueError(
                f"{p.item.id}: the plain prompt asks for an option letter; this question is open"
            )
        return build_plain_messages(p.frames, p.item.question, p.item.options)
    return build_messages(p.frames, p.item.question, p.item.options)


def score(p: PreparedItem, completion: str, opts: EvalOptions) -> dict[str, Any]:
    """One completions.jsonl row. Keyframe and format fields are None under the plain prompt."""
    item = p.item
    letters = item.letters or ""
    row: dict[str, Any] = {
        "id": item.id,
        "prompt": opts.prompt,
        "answers": answer_rule(opts),
        "question_type": item.question_type,
        "answer": item.answer,
        "answer_form": "words" if item.is_open else "letter",
        "source": item.source,
        "q_uid": item.meta.get("q_uid", item.id),
        "letters": letters,
        "frame_times": p.frame_times,
        "completion": completion,
    }
    if opts.prompt == "plain":
        letter = parse_letter(completion, letters)
        row.update(predicted=letter, format_ok=None, problems=[] if letter else ["no option letter"])
        row.update(answered_with="letter" if letter else None, predicted_text=letter)
        row.update(keyframes=None, salient_frames=None, keyframe_f1=None)
    else:
        parsed = parse_answer(completion, item.letters, item.options)
        row.update(answered_with=_answered_with(parsed.answer, parsed.answer_text, item.is_open))
        row.update(predicted_text=parsed.answer_text)
        selector = [] if item.salient_times else sampling.selector_frames(p.frames, opts.selector_k)
        target = salient_set(p.frame_times, item.salient_times, selector, opts.keyframe_tolerance_s)
        row.update(predicted=parsed.answer, format_ok=parsed.format_ok, problems=parsed.problems)
        row.update(
            keyframes=parsed.keyframes,
            salient_frames=target,
            keyframe_f1=f1(parsed.keyframes or [], target) if target else None,
        )
    row["correct"] = None if item.answer is None else answers_match(row["predicted"], item.answer)
    return row


def _answered_with(answer: str | None, written: str | None, is_open: bool) -> str | None:
    """How a multiple-choice answer was given: ``letter``, ``text`` (an option's text) or None
    (no answer, or an open question, whose answers are always words)."""
    if is_open or answer is None or written is None:
        return None
    return "letter" if written.upper() == answer else "text"


def _answer_form(row: dict[str, Any]) -> str:
    """A row's ``answer_form``; rows written before the field existed were all multiple choice."""
    form: str = row.get("answer_form", "letter")
    return form


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def content_free_keyframe_f1(
    rows: list[dict[str, Any]], prior: PositionalPrior | None = None
) -> dict[str, float | None]:
    """What citing without looking earns on these rows.

    Strategies a policy that never looks at the frames can follow (its citation may depend on the
    question type and the frame positions, nothing else), each chosen on these very rows, so an upper
    bound for its kind:

    * ``keyframe_f1_cite_all``: every frame;
    * ``keyframe_f1_best_fixed_position``: the one frame position per question type that scores best;
    * ``keyframe_f1_best_fixed_set``: the set of frame positions per question type that scores best
      (:func:`best_fixed_set`); it contains the two above as special cases, so it is the best
      content-free strategy, the number a model's keyframe F1 is judged against.

    And, with ``prior`` (fitted on the training rows), ``keyframe_f1_positional_prior``: the keyframe
    reward's own baseline, per row the best F1 of any prefix of the question type's positional
    ranking (:meth:`egovlm.train.rewards.KeyframeReward.baseline`; the family's beta is 1, so this is
    F1). It picks the prefix length per question *knowing the salient frames*, so no policy that
    does not look can reach it: the reward subtracts it so that content-free citing earns nothing on
    any prompt, but it is not a strategy to compare a model with."""
    kf = [r for r in rows if r.get("keyframe_f1") is not None]
    positional: float | None = None
    if prior is not None and kf:
        family = KeyframeReward(prior="positional", prior_data=prior)
        positional = _mean(
            [family.baseline(r["salient_frames"], len(r["frame_times"]), r["question_type"]) for r in kf]
        )
    cite_all = [f1(range(1, len(r["frame_times"]) + 1), r["salient_frames"]) for r in kf]
    groups = keyframe_groups(kf).values()
    fixed = [best_fixed_set_of(group, max_size=1)[0] for group in groups]
    best_sets = [best_fixed_set_of(group)[0] for group in groups]
    return {
        "keyframe_f1_cite_all": _mean(cite_all),
        "keyframe_f1_best_fixed_position": sum(fixed) / len(kf) if kf else None,
        "keyframe_f1_best_fixed_set": sum(best_sets) / len(kf) if kf else None,
        "keyframe_f1_positional_prior": positional,
    }


def keyframe_groups(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Eval rows that have a keyframe F1, by question type ("untyped" without one), in first-seen
    order: the groups a content-free strategy is chosen on (its citation may depend on the type)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("keyframe_f1") is not None:
            groups[r.get("question_type") or "untyped"].append(r)
    return dict(groups)


def best_fixed_set_of(
    group: list[dict[str, Any]], max_size: int | None = None
) -> tuple[float, tuple[int, ...]]:
    """:func:`best_fixed_set` over eval rows (their ``salient_frames``, positions up to the largest
    frame count among them)."""
    n = max(len(r["frame_times"]) for r in group)
    return best_fixed_set([r["salient_frames"] for r in group], n, max_size)


def best_fixed_set(
    salient: list[list[int]], n: int, max_size: int | None = None
) -> tuple[float, tuple[int, ...]]:
    """The fixed set of frame positions (1..n, at most ``max_size`` of them; None: any size) whose F1
    summed over these rows' salient sets is largest: (that sum, the set). Exact without trying all
    2^n sets: for a set S of size k, ``sum_r F1(S, T_r) = sum_(p in S) sum_r 2 [p in T_r] / (k + |T_r|)``
    is a sum of per-position weights, so the best set of size k is the k positions of largest weight,
    and the best set is the best of those over the sizes allowed (``max_size`` 1: the best single
    position). Rows with an empty salient set score 0 whatever is cited."""
    best: tuple[float, tuple[int, ...]] = (0.0, ())
    for k in range(1, min(n, max_size or n) + 1):
        weight = dict.fromkeys(range(1, n + 1), 0.0)
        for t in salient:
            for p in set(t):
                if p in weight:
                    weight[p] += 2.0 / (k + len(set(t)))
        top = sorted(weight, key=lambda p: (-weight[p], p))[:k]
        total = sum(weight[p] for p in top)
        if total > best[0] + 1e-12:
            best = (total, tuple(sorted(top)))
    return best


def _accuracy_by_type(rows: list[dict[str, Any]]) -> tuple[float | None, dict[str, dict[str, Any]]]:
    by_type: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_type[r["question_type"] or "untyped"].append(bool(r["correct"]))
    per_type = {t: {"items": len(v), "accuracy": sum(v) / len(v)} for t, v in sorted(by_type.items())}
    return _mean([float(bool(r["correct"])) for r in rows]), per_type


def metrics(rows: list[dict[str, Any]], prior: PositionalPrior | None = None) -> dict[str, Any]:
    """The metrics.json numbers (module docstring); ``prior`` adds the positional keyframe baseline."""
    answered = [r for r in rows if r["answer"] is not None]
    mc = [r for r in answered if _answer_form(r) == "letter"]
    words = [r for r in answered if _answer_form(r) == "words"]
    accuracy, per_type = _accuracy_by_type(mc)
    open_accuracy, open_per_type = _accuracy_by_type(words)
    formats = [not r["format_ok"] for r in rows if r.get("format_ok") is not None]
    kf = [r["keyframe_f1"] for r in rows if r.get("keyframe_f1") is not None]
    forms = [_answer_form(r) for r in rows]
    given = [r["answered_with"] for r in rows if r.get("answered_with") is not None]
    return {
        "items": len(rows),
        "answered_items": len(answered),
        "accuracy": accuracy,
        "per_question_type": per_type,
        "open_items": len(words),
        "open_accuracy": open_accuracy,
        "open_per_question_type": open_per_type,
        "answer_forms": {form: forms.count(form) for form in ("letter", "words")},
        "mc_answered_with": {how: given.count(how) for how in ("letter", "text")},
        "format_failure_rate": _mean([float(x) for x in formats]),
        "no_answer_rate": _mean([float(r["predicted"] is None) for r in rows]),
        "keyframe_f1": _mean(kf),
        "keyframe_items": len(kf),
        **content_free_keyframe_f1(rows, prior),
        "withheld_items": len(rows) - len(answered),
    }


# --- the EgoSchema submission -------------------------------------------------------------------------


def wants_submission(rows: list[dict[str, Any]]) -> bool:
    return any(r["answer"] is None or r.get("source") == "egoschema" for r in rows)


def submission_csv(rows: list[dict[str, Any]]) -> tuple[str, int]:
    """(CSV text, rows with no parsable letter): ``q_uid,answer`` with the 0-based option index, one
    row per item in order; no parsable letter → :data:`NO_LETTER_INDEX`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["q_uid", "answer"])
    missing = 0
    for r in rows:
        letter, letters = r["predicted"], r["letters"]
        if letter and letter in letters:
            writer.writerow([r["q_uid"], letters.index(letter)])
        else:
            writer.writerow([r["q_uid"], NO_LETTER_INDEX])
            missing += 1
    return buf.getvalue(), missing


# --- completions files --------------------------------------------------------------------------------


def read_done(path: Path) -> list[dict[str, Any]]:
    """Rows already written; a torn last line (killed mid-write) is cut off the file."""
    if not path.is_file():
        return []
    rows, good_bytes = [], 0
    with path.open("rb") as f:
        for raw in f:
            try:
                rows.append(json.loads(raw))
            except json.JSONDecodeError:
                break
            if not raw.endswith(b"\n"):
                rows.pop()
                break
            good_bytes += len(raw)
    with path.open("rb+") as f:
        f.truncate(good_bytes)
    return rows


def completion_files(out: Path) -> list[Path]:
    """The merged file and every rank's part (of this or an earlier, interrupted launch)."""
    return [out / COMPLETIONS, *sorted(out.glob(PART.format(rank="*")))]


def read_all_done(out: Path) -> list[dict[str, Any]]:
    """Every row of every completions file, first occurrence of an id kept."""
    seen: dict[str, dict[str, Any]] = {}
    for path in completion_files(out):
        for r in read_done(path):
            seen.setdefault(r["id"], r)
    return list(seen.values())


def check_same_settings(
    done: list[dict[str, Any]], opts: EvalOptions, max_new_tokens: int, out: Path
) -> None:
    """A resumed eval must not mix completions made with another prompt, answer rule or length limit."""
    now = (opts.prompt, answer_rule(opts), max_new_tokens)
    for r in done:
        before = (
            r.get("prompt", "egovlm"),
            r.get("answers", "free"),
            r.get("max_new_tokens", max_new_tokens),
        )
        if before != now:
            raise ValueError(
                f"{out} holds completions made with --prompt {before[0]}, --answers {before[1]} and "
                f"max_new_tokens {before[2]}, not --prompt {now[0]}, --answers {now[1]} and {now[2]}: use "
                f"another --out (or delete {out})"
            )


def answer_rule(opts: EvalOptions) -> str:
    """The answer rule the completions were made with: the plain prompt's bare letter is never
    restricted (it has no ``<answer>`` block; lmms-eval's setting)."""
    if opts.answers not in ANSWER_RULES:
        raise ValueError(f"--answers is {opts.answers!r}; choose one of {', '.join(ANSWER_RULES)}")
    return "free" if opts.prompt == "plain" else opts.answers


def restricted(opts: EvalOptions) -> bool:
    """Whether multiple-choice answers are restricted to the options (:mod:`egovlm.choice`)."""
    return answer_rule(opts) == "options"


def merge(out: Path, order: list[str]) -> list[dict[str, Any]]:
    """Fold the rank parts into completions.jsonl (dataset order first), then delete the parts."""
    rows = read_all_done(out)
    rank = {item_id: i for i, item_id in enumerate(order)}
    rows.sort(key=lambda r: rank.get(r["id"], len(rank)))
    atomic_write_text(out / COMPLETIONS, "".join(json.dumps(r) + "\n" for r in rows))
    for part in out.glob(PART.format(rank="*")):
        part.unlink()
    return rows


# --- the run ------------------------------------------------------------------------------------------


def evaluate(model_id: str, data: Path, out: Path, opts: EvalOptions) -> dict[str, Any]:
    """Run (or resume) an eval in this process or, under ``accelerate launch``, in all of them;
    returns the metrics (also written to ``out/metrics.json``) on every rank."""
    from accelerate import PartialState

    if opts.prompt not in PROMPTS:
        raise ValueError(f"--prompt must be one of {', '.join(PROMPTS)}, got {opts.prompt!r}")
    state = PartialState(cpu=opts.device == "cpu")
    items = read_jsonl(data)[: opts.limit] if opts.limit else read_jsonl(data)
    if opts.prompt == "plain" and (open_ids := [i.id for i in items if i.is_open]):
        raise ValueError(
            f"--prompt plain asks for an option letter, but {len(open_ids)} questions are open "
            f"(no options; first: {open_ids[0]}): use --prompt egovlm"
        )
    recipe = load_recipe(opts)
    max_new_tokens, source = resolve_max_new_tokens(opts, model_id, recipe)
    prior_data = resolve_prior_data(opts, recipe)  # read before generating: a bad file fails early
    prior = PositionalPrior.from_jsonl(prior_data) if prior_data is not None else None
    out.mkdir(parents=True, exist_ok=True)
    with state.main_process_first():  # the main process repairs torn lines before the others read
        done = read_all_done(out)
    check_same_settings(done, opts, max_new_tokens, out)
    done_ids = {r["id"] for r in done}
    todo = [i for i in items if i.id not in done_ids]
    with state.split_between_processes(todo) as mine:
        if mine:
            device = opts.device
            if device == "cuda" and state.num_processes > 1:
                device = f"cuda:{state.local_process_index}"
            model, processor, size = load_for_eval(model_id, device)
            spec = FrameSpec(opts.frames, opts.sampling, size)
            cache = opts.cache_dir or out / "frame_cache"
            sink = out / PART.format(rank=state.process_index)
            extra = {"max_new_tokens": max_new_tokens, "rank": state.process_index}
            _run(model, processor, mine, data.parent, spec, cache, sink, opts, extra)
    state.wait_for_everyone()
    if state.is_main_process:
        wanted = {i.id for i in items}
        rows = [r for r in merge(out, [i.id for i in items]) if r["id"] in wanted]
        result = metrics(rows, prior)
        result.update(
            model=model_id,
            data=str(data),
            prompt=opts.prompt,
            answers=answer_rule(opts),
            frames=opts.frames,
            sampling=opts.sampling,
            max_new_tokens=max_new_tokens,
            max_new_tokens_source=source,
            processes=state.num_processes,
            keyframe_prior_data=None if prior_data is None else str(prior_data),
            submission=_write_submission(out, rows),
        )
        atomic_write_text(out / METRICS, json.dumps(result, indent=2) + "\n")
    state.wait_for_everyone()
    return dict(json.loads((out / METRICS).read_text(encoding="utf-8")))


def _write_submission(out: Path, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    rows = [r for r in rows if _answer_form(r) == "letter"]  # open questions have no index
    if not wants_submission(rows):
        return None
    text, missing = submission_csv(rows)
    atomic_write_text(out / SUBMISSION, text)
    return {
        "file": SUBMISSION,
        "rows": len(rows),
        "no_letter_rows": missing,
        "no_letter_index": NO_LETTER_INDEX,
    }


@dataclass
class PromptBatch:
    """A batch of questions ready for the model: each item with its frame set, its messages in one
    prompt form and its frames as images."""

    prepared: list[PreparedItem]
    messages: list[list[Message]]
    images: list[list[Any]]


def prompt_batches(
    items: list[QAItem], size: int, base: Path, spec: FrameSpec, cache: Path, prompt: str = "egovlm"
) -> Iterator[PromptBatch]:
    """``items`` in batches of ``size``, each item's frames decoded (or read from ``cache``) and
    rendered as :func:`prompt_messages` in ``prompt``: the loop every pass of a model over questions
    runs (eval, and the miniature experiment's pass@k and citation probes)."""
    for start in range(0, len(items), size):
        prepared = [prepare_item(item, base, spec, cache) for item in items[start : start + size]]
        yield PromptBatch(
            prepared,
            [prompt_messages(p, prompt) for p in prepared],
            [[f.pil() for f in p.frames] for p in prepared],
        )


def _run(
    model: Any,
    processor: Any,
    todo: list[QAItem],
    base: Path,
    spec: FrameSpec,
    cache: Path,
    sink: Path,
    opts: EvalOptions,
    extra: dict[str, Any],
) -> None:
    """Generate and score ``todo`` in batches, appending rows (with ``extra``: the length limit, the
    rank that made them) to ``sink`` as they are produced."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(f"eval {sink.stem}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not opts.progress) as bar, sink.open("a", encoding="utf-8") as f:
        task = bar.add_task("eval", total=len(todo))
        for batch in prompt_batches(todo, opts.batch_size, base, spec, cache, opts.prompt):
            options = [p.item.options for p in batch.prepared] if restricted(opts) else None
            texts = greedy(model, processor, batch.messages, batch.images, extra["max_new_tokens"], options)
            for p, text in zip(batch.prepared, texts, strict=True):
                f.write(json.dumps({**score(p, text, opts), **extra}) + "\n")
            f.flush()
            bar.advance(task, len(batch.prepared))
