"""``egovlm eval``: greedy answers of a model on a dataset, scored with the training rewards' parser.

Frames go through the same contract and the same frame cache as training (uniform or salient
sampling, resized to the model's keyframe size). Outputs in ``--out``:

* ``completions.jsonl`` — one row per item, appended as it is produced (a killed eval resumes by
  skipping the ids already there; a torn last line is dropped);
* ``metrics.json`` — accuracy overall and per question type (items with public answers),
  format-failure rate, keyframe F1 (items with a salient set), counts;
* ``submission.json`` — for items without public answers (EgoSchema's withheld 4,500), the
  benchmark's submission format ``{q_uid: option index}``; ``-1`` marks a completion with no
  parsable letter (scored wrong by the benchmark, counted in ``metrics.json``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egovlm.atomic import atomic_write_text
from egovlm.contract import parse_answer
from egovlm.schema import QAItem, read_jsonl
from egovlm.train import sampling
from egovlm.train.dataset import FrameSpec, PreparedItem, prepare_item
from egovlm.train.generation import greedy
from egovlm.train.rewards import f1, salient_set

COMPLETIONS = "completions.jsonl"
METRICS = "metrics.json"
SUBMISSION = "submission.json"


@dataclass
class EvalOptions:
    frames: int = 8
    sampling: str = "uniform"
    batch_size: int = 4
    max_new_tokens: int = 256
    device: str = "cpu"
    keyframe_tolerance_s: float | None = None
    selector_k: int = 2
    limit: int | None = None
    cache_dir: Path | None = None
    progress: bool = True


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


def score(p: PreparedItem, completion: str, opts: EvalOptions) -> dict[str, Any]:
    item = p.item
    parsed = parse_answer(completion, "".join(item.options))
    selector = [] if item.salient_times else sampling.selector_frames(p.frames, opts.selector_k)
    target = salient_set(p.frame_times, item.salient_times, selector, opts.keyframe_tolerance_s)
    return {
        "id": item.id,
        "question_type": item.question_type,
        "answer": item.answer,
        "predicted": parsed.answer,
        "correct": None if item.answer is None else parsed.answer == item.answer,
        "format_ok": parsed.format_ok,
        "problems": parsed.problems,
        "keyframes": parsed.keyframes,
        "salient_frames": target,
        "keyframe_f1": f1(parsed.keyframes or [], target) if target else None,
        "frame_times": p.frame_times,
        "completion": completion,
        "q_uid": item.meta.get("q_uid", item.id),
        "letters": "".join(item.options),
    }


def metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    answered = [r for r in rows if r["answer"] is not None]
    by_type: dict[str, list[bool]] = defaultdict(list)
    for r in answered:
        by_type[r["question_type"] or "untyped"].append(bool(r["correct"]))
    kf = [r["keyframe_f1"] for r in rows if r["keyframe_f1"] is not None]
    return {
        "items": len(rows),
        "answered_items": len(answered),
        "accuracy": sum(bool(r["correct"]) for r in answered) / len(answered) if answered else None,
        "per_question_type": {
            t: {"items": len(v), "accuracy": sum(v) / len(v)} for t, v in sorted(by_type.items())
        },
        "format_failure_rate": sum(not r["format_ok"] for r in rows) / len(rows) if rows else None,
        "no_answer_rate": sum(r["predicted"] is None for r in rows) / len(rows) if rows else None,
        "keyframe_f1": sum(kf) / len(kf) if kf else None,
        "keyframe_items": len(kf),
        "withheld_items": len(rows) - len(answered),
    }


def submission(rows: list[dict[str, Any]]) -> dict[str, int]:
    """EgoSchema's format: q_uid → 0-based option index (-1: no parsable letter)."""
    out = {}
    for r in rows:
        if r["answer"] is None:
            letter = r["predicted"]
            out[r["q_uid"]] = r["letters"].index(letter) if letter and letter in r["letters"] else -1
    return out


def _batches(items: list[QAItem], size: int) -> list[list[QAItem]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def evaluate(model_id: str, data: Path, out: Path, opts: EvalOptions) -> dict[str, Any]:
    """Run (or resume) an eval; returns the metrics (also written to ``out/metrics.json``)."""
    items = read_jsonl(data)[: opts.limit] if opts.limit else read_jsonl(data)
    out.mkdir(parents=True, exist_ok=True)
    done = read_done(out / COMPLETIONS)
    done_ids = {r["id"] for r in done}
    todo = [i for i in items if i.id not in done_ids]
    if todo:
        model, processor, size = load_for_eval(model_id, opts.device)
        spec = FrameSpec(opts.frames, opts.sampling, size)
        cache = opts.cache_dir or out / "frame_cache"
        _run(model, processor, todo, data.parent, spec, cache, out / COMPLETIONS, opts)
    wanted = {i.id for i in items}
    rows = [r for r in read_done(out / COMPLETIONS) if r["id"] in wanted]
    result = metrics(rows)
    result.update(model=model_id, data=str(data), frames=opts.frames, sampling=opts.sampling)
    atomic_write_text(out / METRICS, json.dumps(result, indent=2) + "\n")
    sub = submission(rows)
    if sub:
        atomic_write_text(out / SUBMISSION, json.dumps(sub, indent=1) + "\n")
    return result


def _run(
    model: Any,
    processor: Any,
    todo: list[QAItem],
    base: Path,
    spec: FrameSpec,
    cache: Path,
    sink: Path,
    opts: EvalOptions,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not opts.progress) as bar, sink.open("a", encoding="utf-8") as f:
        task = bar.add_task("eval", total=len(todo))
        for batch in _batches(todo, opts.batch_size):
            prepared = [prepare_item(item, base, spec, cache) for item in batch]
            messages = [p.messages() for p in prepared]
            images = [[f.pil() for f in p.frames] for p in prepared]
            texts = greedy(model, processor, messages, images, opts.max_new_tokens)
            for p, text in zip(prepared, texts, strict=True):
                f.write(json.dumps(score(p, text, opts)) + "\n")
            f.flush()
            bar.advance(task, len(batch))
