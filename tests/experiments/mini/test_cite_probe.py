"""The first-citation probe (experiments.mini.cite_probe): its summary, and that its distribution is
the one greedy decoding actually cites from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from egovlm.schema import read_jsonl
from experiments.mini.cite_probe import first_citations, summarise

REPO = Path(__file__).resolve().parents[3]
BASE = REPO / "models" / "egovlm-mini-base"


def test_summary_per_type() -> None:
    rows = [
        {"question_type": "a", "salient_frames": [2], "p": [0.1, 0.7, 0.2]},
        {"question_type": "a", "salient_frames": [3], "p": [0.6, 0.3, 0.1]},
        {"question_type": "b", "salient_frames": [1, 3], "p": [0.25, 0.5, 0.25]},
    ]
    s = summarise(rows)
    assert s["a"]["rows"] == 2 and s["a"]["p_salient"] == pytest.approx((0.7 + 0.1) / 2)
    assert s["a"]["top_is_salient"] == 0.5 and s["a"]["p_top"] == pytest.approx(0.65)
    assert s["a"]["top_frames"] == [(2, 1), (1, 1)]
    assert s["b"]["p_salient"] == pytest.approx(0.5) and s["b"]["top_is_salient"] == 0.0


def test_the_most_likely_frame_is_what_greedy_decoding_cites_first(synth_slice: Path, tmp_path: Path) -> None:
    """The probe forces the completion's opening and reads the next token; greedy generation from the
    plain prompt must then cite that very frame first (else the probe reads another distribution)."""
    from egovlm.train.dataset import FrameSpec, prepare_item
    from egovlm.train.eval import load_for_eval, prompt_messages
    from egovlm.train.generation import greedy

    items = [i for i in read_jsonl(synth_slice / "qa.jsonl") if not i.is_open and i.salient_times][:6]
    assert items, "precondition: the slice has questions with salient moments"
    cache = tmp_path / "cache"
    rows = first_citations(str(BASE), items, synth_slice, 8, cache)
    assert len(rows) == len(items)
    assert all(len(r["p"]) == 8 and sum(r["p"]) == pytest.approx(1.0, abs=1e-4) for r in rows)
    model, processor, size = load_for_eval(str(BASE), "cpu")
    prepared = [prepare_item(i, synth_slice, FrameSpec(8, "uniform", size), cache) for i in items]
    texts = greedy(
        model,
        processor,
        [prompt_messages(p, "egovlm") for p in prepared],
        [[f.pil() for f in p.frames] for p in prepared],
        24,
    )
    for row, text in zip(rows, texts, strict=True):
        cited = re.search(r"<keyframes>\s*(\d)", text)
        assert cited, text
        assert int(cited.group(1)) == max(range(8), key=row["p"].__getitem__) + 1, (text, row["p"])
