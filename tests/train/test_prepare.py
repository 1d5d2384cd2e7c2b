"""``egovlm data prepare``: every row decoded once (in a process pool), resumable, a manifest the
trainer checks; the trainer refuses unprepared data with the command to run and never decodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from egovlm.cli import app
from egovlm.schema import read_jsonl, write_jsonl
from egovlm.train import sampling
from egovlm.train.config import load_config
from egovlm.train.dataset import FrameSpec, entry_folder, is_prepared, load_entry, prepare_item
from egovlm.train.prepare import (
    DataNotPreparedError,
    PrepareError,
    check_prepared,
    frame_spec,
    manifest_path,
    prepare_dataset,
)
from egovlm.train.trainer import prepared_data

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "tiny_cpu.yaml"
SIZE = (112, 84)
SPEC = FrameSpec(4, "uniform", SIZE)


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src.parent, dst)
    return dst / src.name


def recipe(tmp_path: Path, data: Path, model: Path, *extra: str) -> Any:
    return load_config(
        RECIPE,
        [f"run.output_dir={tmp_path / 'run'}", f"model.path={model}", f"data.train={data}", *extra],
    )


def test_prepare_decodes_every_row_in_a_pool_and_writes_a_manifest(
    fixture_data: Path, tmp_path: Path
) -> None:
    data = copy_dataset(fixture_data, tmp_path / "data")
    items = read_jsonl(data)
    cache = tmp_path / "cache"
    result = prepare_dataset(data, SPEC, cache, items, workers=2)
    assert (result.rows, result.decoded, result.reused) == (len(items), len(items), 0)
    for item in items:
        frames = load_entry(entry_folder(item, data.parent, SPEC, cache))
        assert len(frames) == 4 and frames[0].image.shape == (SIZE[1], SIZE[0], 3)
    manifest = json.loads(result.manifest.read_text())
    assert result.manifest == manifest_path(cache, data, SPEC)
    assert manifest["rows"] == manifest["done"] == len(items)
    assert manifest["frame_spec"]["n"] == 4 and manifest["frame_spec"]["size"] == list(SIZE)
    assert manifest["dataset"]["path"] == str(data.resolve())
    assert manifest["dataset"]["size"] == data.stat().st_size
    assert not list(cache.glob(".*"))  # no temporary folders left


def test_a_killed_prepare_continues_where_it_stopped(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = copy_dataset(fixture_data, tmp_path / "data")
    items = read_jsonl(data)
    cache = tmp_path / "cache"
    for item in items[:4]:  # a first prepare got this far, then was killed (no manifest yet)
        prepare_item(item, data.parent, SPEC, cache)
    (cache / ".fx05-abc.tmp123").mkdir()  # the killed run's half-written entry
    assert not manifest_path(cache, data, SPEC).exists()
    before = {i.id: entry_folder(i, data.parent, SPEC, cache).stat().st_mtime_ns for i in items[:4]}
    decoded: list[str] = []
    real = sampling.sample

    def counting(media: Path, *a: Any, **k: Any) -> Any:
        decoded.append(media.name)
        return real(media, *a, **k)

    monkeypatch.setattr(sampling, "sample", counting)
    result = prepare_dataset(data, SPEC, cache, items, workers=1)
    assert (result.decoded, result.reused) == (2, 4)
    assert sorted(decoded) == sorted(i.video for i in items[4:] if i.video)  # workers=1: in this process
    after = {i.id: entry_folder(i, data.parent, SPEC, cache).stat().st_mtime_ns for i in items[:4]}
    assert after == before  # finished entries were not rewritten
    assert all(is_prepared(entry_folder(i, data.parent, SPEC, cache)) for i in items)
    assert json.loads(manifest_path(cache, data, SPEC).read_text())["done"] == len(items)


def test_the_clip_window_is_part_of_the_cache_key(fixture_data: Path, tmp_path: Path) -> None:
    item = read_jsonl(fixture_data)[0]
    cut = item.model_copy(update={"start_s": 1.0, "end_s": 2.0, "salient_times": None})
    whole = prepare_item(item, fixture_data.parent, SPEC, tmp_path)
    part = prepare_item(cut, fixture_data.parent, SPEC, tmp_path)
    assert part.folder != whole.folder
    assert all(1.0 <= t <= 2.0 for t in part.frame_times), part.frame_times
    assert not all(1.0 <= t <= 2.0 for t in whole.frame_times)


def test_rows_that_cannot_be_decoded_are_named_and_the_others_kept(
    fixture_data: Path, tmp_path: Path
) -> None:
    data = copy_dataset(fixture_data, tmp_path / "data")
    (data.parent / "clip02.mp4").write_bytes(b"not a video")
    items = read_jsonl(data)
    cache = tmp_path / "cache"
    with pytest.raises(PrepareError, match=r"(?s)1 of 6 rows.*row 'fx02'.*clip02\.mp4"):
        prepare_dataset(data, SPEC, cache, items, workers=2)
    assert not manifest_path(cache, data, SPEC).exists()
    ok = [i for i in items if i.id != "fx02"]
    assert all(is_prepared(entry_folder(i, data.parent, SPEC, cache)) for i in ok)


def test_trainer_refuses_unprepared_or_changed_data_without_decoding(
    fixture_data: Path, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = copy_dataset(fixture_data, tmp_path / "data")
    cfg = recipe(tmp_path, data, tiny_model_dir)
    spec = frame_spec(cfg, SIZE)

    def no_decoding(*_: Any, **__: Any) -> None:
        raise AssertionError("the trainer decoded video")

    monkeypatch.setattr(sampling, "sample", no_decoding)
    # Several processes: even the synth demo recipe is refused (nobody may decode under a barrier).
    with pytest.raises(DataNotPreparedError, match=r"no manifest.*\n.*\n  egovlm data prepare --config "):
        prepared_data(cfg, spec, world_size=2)
    monkeypatch.undo()
    prepare_dataset(data, spec, Path(cfg.run.output_dir) / "frame_cache", read_jsonl(data), workers=1)
    assert check_prepared(cfg, data, spec)["rows"] == 6
    assert prepared_data(cfg, spec, world_size=2) == data
    items = read_jsonl(data)
    write_jsonl(data, items[:5])  # the dataset changed after it was prepared
    with pytest.raises(DataNotPreparedError, match="changed since it was prepared"):
        check_prepared(cfg, data, spec)


def test_cli_prepare_then_train_refusal_names_the_exact_command(
    fixture_data: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    data = copy_dataset(fixture_data, tmp_path / "data")
    overrides = [
        f"run.output_dir={tmp_path / 'run'}",
        f"model.path={tiny_model_dir}",
        f"data.train={data}",
        "data.synth=null",  # a real recipe: no self-preparing demo data
        "grpo.max_steps=1",
    ]
    runner = CliRunner()
    refused = runner.invoke(app, ["train", "--config", str(RECIPE), *overrides])
    assert refused.exit_code == 2
    text = " ".join(refused.output.split())  # rich may wrap long lines
    assert "training data not prepared" in text
    assert f"egovlm data prepare --config {RECIPE} {' '.join(overrides)}" in text
    assert not (tmp_path / "run" / "frame_cache").exists()  # nothing decoded
    done = runner.invoke(app, ["data", "prepare", "--config", str(RECIPE), *overrides, "--workers", "1"])
    assert done.exit_code == 0, done.output
    assert "prepared 6 rows (6 decoded now, 0 already cached)" in done.output
    again = runner.invoke(app, ["data", "prepare", "--config", str(RECIPE), *overrides])
    assert "(0 decoded now, 6 already cached)" in again.output


def test_prepare_refuses_a_positional_prior_the_data_cannot_estimate_before_decoding(
    fixture_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    """A recipe whose keyframe reward needs the positional prior, on rows without salient times:
    prepare says so (and what to use instead) before it decodes anything."""
    from egovlm.train.prepare import prepare
    from egovlm.train.rewards import PriorDataError

    data = copy_dataset(fixture_data, tmp_path / "data")
    write_jsonl(data, [i.model_copy(update={"salient_times": None}) for i in read_jsonl(data)])
    decoded: list[Path] = []
    monkeypatch.setattr(sampling, "sample", lambda media, *a, **k: decoded.append(media))
    cfg = recipe(tmp_path, data, tiny_model_dir, "rewards.keyframe_prior=positional")
    with pytest.raises(PriorDataError, match="keyframe_prior: cite_all"):
        prepare(cfg, workers=1)
    assert decoded == []
    monkeypatch.undo()
    assert prepare(recipe(tmp_path, data, tiny_model_dir), workers=1).decoded == len(read_jsonl(data))
