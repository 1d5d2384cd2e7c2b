"""Dense object labels for the vision tower (experiments.mini.vision_aux): label geometry and order,
and a base stage with the vision steps that saves a plain Qwen2.5-VL checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from egovlm.frames import Frame
from experiments.mini.pretrain_data import held_at, load_truth, planned_clip
from experiments.mini.vision_aux import (
    MERGE,
    auroc,
    constant_loss,
    frame_labels,
    object_names,
    place_labels,
    place_names,
)


def test_cells_follow_the_renderers_boxes_in_raster_order(synth_slice: Path) -> None:
    size = (112, 84)
    names = object_names()
    checked = 0
    for clip in load_truth(synth_slice):
        frames = [
            Frame(i + 1, t, np.zeros((84, 112, 3), np.uint8)) for i, t in enumerate(np.linspace(0.3, 7.7, 8))
        ]
        cells, held = frame_labels(clip, frames, size)
        assert cells.shape == (8, (84 // MERGE) * (112 // MERGE), len(names))
        planned = planned_clip(*clip.render, clip.duration_s)  # type: ignore[misc]
        sx, sy = size[0] / planned.renderer.size[0], size[1] / planned.renderer.size[1]
        for f, frame in enumerate(frames):
            for obj in planned.script.objects:
                x0, y0, x1, y1 = planned.renderer.object_box(obj.name, frame.timestamp_s)
                cx, cy = (x0 + x1) / 2 * sx, (y0 + y1) / 2 * sy
                big = (x1 - x0) * sx >= 8 and (y1 - y0) * sy >= 8
                if big and cx < size[0] and cy < size[1]:
                    cell = int(cy // MERGE) * (size[0] // MERGE) + int(cx // MERGE)
                    assert cells[f, cell, names.index(obj.name)] == 1.0
                    checked += 1
                if x1 <= x0 or y1 <= y0:  # out of view: no cell
                    assert cells[f, :, names.index(obj.name)].sum() == 0
            assert {names[k] for k in np.flatnonzero(held[f])} == set(
                held_at(clip.events, frame.timestamp_s).values()
            )
    assert checked >= 10


def test_place_columns_mark_the_tokens_of_objects_resting_there(synth_slice: Path) -> None:
    """With places, a place column is 1 exactly on the object tokens of objects resting in that
    place (never on a held object's), and the object columns are the same as without."""
    size = (112, 84)
    names, places = object_names(), place_names()
    marked = 0
    for clip in load_truth(synth_slice):
        frames = [
            Frame(i + 1, t, np.zeros((84, 112, 3), np.uint8)) for i, t in enumerate(np.linspace(0.3, 7.7, 8))
        ]
        plain, _ = frame_labels(clip, frames, size)
        cells, held = frame_labels(clip, frames, size, places=True)
        assert cells.shape[-1] == len(names) + len(places)
        assert np.array_equal(cells[..., : len(names)], plain)
        script = planned_clip(*clip.render, clip.duration_s).script  # type: ignore[misc]
        for f, frame in enumerate(frames):
            expected = np.zeros_like(cells[f, :, len(names) :])
            for r in script.resting_at(frame.timestamp_s):
                k = names.index(script.objects[r.obj].name)
                expected[:, places.index(r.place)] = np.maximum(
                    expected[:, places.index(r.place)], plain[f, :, k]
                )
            assert np.array_equal(cells[f, :, len(names) :], expected)
            marked += int(expected.sum())
            for k in np.flatnonzero(held[f]):  # a held object's tokens carry no place of their own
                resting_here = [
                    names.index(script.objects[r.obj].name) for r in script.resting_at(frame.timestamp_s)
                ]
                assert k not in resting_here
    assert marked >= 10


def test_event_columns_mark_the_frames_a_citation_of_the_event_is_scored_against(synth_slice: Path) -> None:
    """With half the prompt's frame spacing as the window, the pick-up / put-down columns of an
    object mark exactly the frames the keyframe reward calls salient for those events (each event's
    nearest frame, ties both), and the held columns stay as without."""
    from egovlm.train.rewards import salient_frame_indices
    from egovlm.video import uniform_times

    size = (112, 84)
    names = object_names()
    marked = 0
    for clip in load_truth(synth_slice):
        times = uniform_times(clip.duration_s, 8)
        frames = [Frame(i + 1, t, np.zeros((84, 112, 3), np.uint8)) for i, t in enumerate(times)]
        _, plain = frame_labels(clip, frames, size)
        _, held = frame_labels(clip, frames, size, event_window_s=clip.duration_s / 16)
        assert held.shape == (8, 3 * len(names))
        assert np.array_equal(held[:, : len(names)], plain)
        for block, action in ((1, "pick_up"), (2, "put_down")):
            for k, name in enumerate(names):
                moments = [
                    float(e["t"]) for e in clip.events if e["action"] == action and e["object"] == name
                ]
                got = [f + 1 for f in np.flatnonzero(held[:, block * len(names) + k])]
                assert got == salient_frame_indices(times, moments, None), (clip.clip_id, action, name)
                marked += len(got)
    assert marked >= 4  # the slice's clips are short: 5 event frames


def test_constant_predictor_loss_is_the_label_entropy() -> None:
    import torch

    cells = torch.zeros(40, 3)
    cells[:10, 0] = 1  # rate 0.25 in one class, 0 in the others
    held = torch.zeros(4, 3)
    expected = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)) / 3
    assert abs(constant_loss(cells, held) - expected) < 1e-3


def test_weighted_constant_predictor_is_the_best_constant() -> None:
    """With positives weighted by w, no other constant per label scores a lower weighted BCE
    (the loss is a mean over labels, so each label's constant is searched on its own)."""
    import torch
    from torch.nn.functional import binary_cross_entropy_with_logits as bce

    rng = np.random.default_rng(0)
    cells = torch.from_numpy((rng.random((200, 2)) < [0.05, 0.3]).astype(np.float32))
    held = torch.zeros(5, 2)
    held[0, 1] = 1
    w = torch.tensor(20.0)
    grid = torch.linspace(-6, 6, 241)

    def best_on_grid(y: torch.Tensor) -> float:
        per_label = [min(float(bce(g.expand(len(y)), y[:, k], pos_weight=w)) for g in grid) for k in range(2)]
        return sum(per_label) / 2

    searched = best_on_grid(cells) + best_on_grid(held)
    assert constant_loss(cells, held, w) <= searched + 1e-6
    assert constant_loss(cells, held, w) > searched - 0.01  # and it is that minimum, not below it


def test_auroc_counts_pairs_and_ties() -> None:
    import torch

    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.integers(0, 5, 60).astype(np.float32))  # many ties
    labels = torch.from_numpy(rng.random(60) < 0.3)
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    assert abs(auroc(scores, labels) - float(pairs.mean())) < 1e-9
    assert auroc(labels.float(), labels) == 1.0 and auroc(-labels.float(), labels) == 0.0
    assert auroc(torch.zeros(60), labels) == 0.5  # a constant reads nothing
    assert np.isnan(auroc(scores, torch.zeros(60, dtype=torch.bool)))


@pytest.mark.parametrize("events", [False, True])
def test_base_stage_with_vision_steps_saves_a_plain_model(
    synth_slice: Path, tmp_path: Path, events: bool
) -> None:
    """Also with the event columns (their window is an 8-frame prompt's, whatever the phase shows)."""
    from safetensors import safe_open

    from experiments.mini.pretrain import load_pretrain_config, pretrain

    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text(
        f"run: {{output_dir: {tmp_path / 'run'}, threads: 1, log_every: 2}}\n"
        "model: {build: tiny, seed: 0}\n"
        f"data: {{train: {synth_slice}, frames: 4, frame_sets: 1, describe_per_set: 1, qa_per_set: 1}}\n"
        "optim: {steps: 4, batch_size: 2, lr: 3.0e-3, warmup_steps: 1}\n"
        f"vision: {{steps: 5, batch_frames: 4, frames_per_clip: 4, aux_weight: 0.5, events: {str(events).lower()}}}\n"
    )
    summary = pretrain(load_pretrain_config(cfg))
    steps = [r for r in summary["vision"] if "vision_step" in r]
    assert steps and steps[-1]["vision_step"] == 5 and np.isfinite(steps[-1]["held_out"])
    assert steps[0]["vision_step"] == 0 and steps[0]["train"] is None  # the untrained heads, for reference
    assert all(0.0 <= r["auroc_cells"] <= 1.0 for r in steps)
    assert summary["vision"][0]["constant_predictor"] > 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(r["vision_aux_loss"] > 0 for r in rows if "loss" in r)
    # the heads are dropped: the checkpoint holds exactly the architecture's tensors
    keys = lambda p: set(safe_open(str(p / "model.safetensors"), "pt").keys())  # noqa: E731
    assert keys(Path(summary["final_dir"])) == keys(tmp_path / "run" / "init")
    # the grammar was trained, so the answer tags were not reset to "a tag"
    assert "answer_tags_initialised" not in summary


def test_vision_steps_process_frames_in_bounded_chunks_with_the_same_result(
    synth_slice: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processor sees at most PIXEL_CHUNK frames (or a batch) per call, never every frame at once
    (18 GB at 2000 clips), and chunking changes nothing: the vision steps log exactly what they log with
    the held-out quarter processed in one call (the training batches are processed per batch either way)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from experiments.mini import vision_aux
    from experiments.mini.vision_aux import VisionAux

    processor = AutoProcessor.from_pretrained(str(tiny_model_dir))
    calls: list[int] = []
    process = processor.image_processor

    class Spy:
        def __call__(self, images: list, **kw: object) -> object:
            calls.append(len(images))
            return process(images=images, **kw)

    processor.image_processor = Spy()
    clips = load_truth(synth_slice)

    def run(chunk: int) -> list:
        monkeypatch.setattr(vision_aux, "PIXEL_CHUNK", chunk)
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        head = VisionAux(model, len(object_names()), (112 // MERGE) * (84 // MERGE))
        calls.clear()
        return vision_aux.train_vision(model, processor, head, clips, (112, 84), 4, 2, 1e-3, 8, 0)

    everything = run(10_000)
    assert max(calls) == 3 * 8 - 3 * 8 * 3 // 4  # the held-out quarter in one call, then batches of 2
    chunked = run(4)
    assert max(calls) == 4 and len(chunked) == len(everything) == 6
    assert json.dumps(chunked) == json.dumps(everything)  # bit for bit (NaN too): the processor is per frame


def test_name_head_reads_tokens_against_the_name_embeddings(tiny_model_dir: Path) -> None:
    """The per-token logit of object k is scale x cos(token, mean embedding of k's name) + bias, and
    its gradient reaches the word embeddings (the language steps align both sides)."""
    import torch
    from torch.nn.functional import normalize
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from experiments.mini.vision_aux import VisionAux

    processor = AutoProcessor.from_pretrained(str(tiny_model_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    tokens = VisionAux.name_tokens(processor.tokenizer)
    assert [processor.tokenizer.decode(t).strip() for t in tokens] == object_names()
    with pytest.raises(
        ValueError, match=f"name_tokens names {len(tokens)} columns, the per-token head has 3"
    ):
        VisionAux(model, 3, 12, name_tokens=tokens)
    with_places = VisionAux.name_tokens(processor.tokenizer, places=True)
    assert [processor.tokenizer.decode(t).strip() for t in with_places] == object_names() + place_labels()
    placed = VisionAux(model, len(tokens), 12, name_tokens=with_places, places=True)
    placed.features = torch.randn(24, model.config.text_config.hidden_size)
    cells, held = placed.logits(24)  # a column per object and place; the held head objects only
    assert cells.shape == (24, len(with_places)) and held.shape == (2, len(tokens))
    placed.remove()
    aux = VisionAux(model, len(tokens), 12, pos_weight=20.0, name_tokens=tokens)
    feats = torch.randn(24, model.config.text_config.hidden_size)
    aux.features = feats
    cells, held = aux.logits(24)
    assert cells.shape == (24, len(tokens)) and held.shape == (2, len(tokens))
    emb = model.get_input_embeddings().weight
    k = 3
    name = emb[tokens[k]].mean(0)
    normed = torch.nn.functional.layer_norm(feats, feats.shape[-1:])
    expected = 10.0 * normalize(normed, dim=-1) @ normalize(name, dim=0) - 3.0
    assert torch.allclose(cells[:, k], expected, atol=1e-5)
    labels = torch.zeros(24, len(tokens))
    labels[0, k] = 1
    aux.loss(labels, torch.zeros(2, len(tokens))).backward()
    assert emb.grad is not None and emb.grad[tokens[k]].abs().sum() > 0
    assert len(aux.parameters()) == 4  # scale, bias and the linear held head: never the embedding
