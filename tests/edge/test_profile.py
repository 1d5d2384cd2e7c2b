"""Device profiles: every shipped profile validates and fits; bad fields are named with their file;
the memory check refuses what cannot fit, with the reason; the size model matches real models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from egovlm.edge.profile import (
    KNOWN_MODELS,
    PROFILE_DIR,
    MemoryBudgetError,
    ModelDims,
    ProfileError,
    check_memory,
    estimate_memory,
    load_profile,
)

SHIPPED = ["cpu", "orin-nano", "orin-nx", "agx-orin", "thor"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_validate_and_fit(name: str) -> None:
    profile = load_profile(name)
    assert profile.device == name and profile.source.endswith(f"{name}.yaml")
    est = check_memory(profile)
    assert est.fits and est.max_capacity >= profile.keyframes.capacity
    assert est.total_gb <= est.budget_gb


def test_all_profile_files_are_covered() -> None:
    assert sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")) == sorted(SHIPPED)


def _write(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((PROFILE_DIR / "orin-nano.yaml").read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"keyframes__capacity": 0}, "keyframes.capacity"),
        ({"keyframes__size": [450, 336]}, "keyframes.size"),
        ({"precision": "int3"}, "precision"),
        ({"memory_budget_gb": -1}, "memory_budget_gb"),
        ({"selector__novelty": -2}, "selector.novelty"),
        ({"selector__novelti": 2}, "selector.novelti"),
        ({"generation__max_new_tokens": 0}, "generation.max_new_tokens"),
        ({"generation__return_scores": True}, "generation"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_field_is_named_with_the_file(tmp_path: Path, change: dict[str, object], field: str) -> None:
    path = _write(tmp_path, **change)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(path) in str(err.value) and f"'{field}'" in str(err.value)


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ProfileError, match="orin-nano"):
        load_profile("orin-mega")


def test_memory_check_refuses_what_cannot_fit(tmp_path: Path) -> None:
    # fp16 weights of the 3B model (7.57 GiB with the tied head in two graphs) cannot fit Orin Nano's
    # budget (the export target's: 8 GB x 0.6 = 4.80 GiB), whatever K.
    with pytest.raises(MemoryBudgetError, match=r"orin-nano|custom") as err:
        check_memory(load_profile(_write(tmp_path, precision="fp16")))
    assert "weights 7.57 GiB" in str(err.value) and "lower precision" in str(err.value)
    assert "of 4.80 GiB (orin-nano: 8.0 GB x 0.6)" in str(err.value)
    # int4 fits with the profile's K but not with K=200: the error says how many fit.
    big = load_profile(_write(tmp_path, keyframes__capacity=200))
    with pytest.raises(MemoryBudgetError, match=r"at most \d+ keyframes fit") as err:
        check_memory(big)
    est = estimate_memory(big, KNOWN_MODELS["qwen2.5-vl-3b"])
    assert 1 <= est.max_capacity < 200
    assert estimate_memory(big, KNOWN_MODELS["qwen2.5-vl-3b"], est.max_capacity).fits
    assert not estimate_memory(big, KNOWN_MODELS["qwen2.5-vl-3b"], est.max_capacity + 1).fits


def test_kv_grows_with_capacity_and_precision() -> None:
    p = load_profile("agx-orin")
    dims = KNOWN_MODELS["qwen2.5-vl-3b"]
    assert dims.kv_bytes_per_token("fp16") == 2 * 36 * 2 * 128 * 2  # 36 layers, 2 KV heads of 128
    small, large = estimate_memory(p, dims, 4), estimate_memory(p, dims, 32)
    assert large.kv_gb > small.kv_gb * 5 and large.weights_gb == small.weights_gb
    assert large.fits and not estimate_memory(p, dims, large.max_capacity + 1).fits
    int4 = estimate_memory(p.model_copy(update={"precision": "int4"}), dims, 32)
    assert int4.weights_gb < large.weights_gb / 2


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_size_model_matches_real_parameter_counts(which: str, request: pytest.FixtureRequest) -> None:
    from safetensors import safe_open

    path: Path = request.getfixturevalue(f"{which}_model_dir")
    dims = ModelDims.from_model_dir(path)
    total = 0
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            if not name.startswith("lm_head"):  # tied to the embeddings
                n = 1
                for d in f.get_slice(name).get_shape():
                    n *= d
                total += n
    assert dims.text_params() + dims.vision_params() == total


def test_one_accounting_with_the_export() -> None:
    """The device profile's check IS the export's fit check: same plan for the same workload."""
    from egovlm.export import fit
    from egovlm.export import tensorrt_build as tb
    from egovlm.export.targets import load_targets

    profile = load_profile("orin-nano")
    dims = KNOWN_MODELS["qwen2.5-vl-3b"]
    est = check_memory(profile)
    target = load_targets()["orin-nano"]
    weights = fit.weight_bytes(dims.tensors(), "tensorrt", target.default_precision)
    work = tb.export_workload(target, dims, profile.keyframes.size)  # what the export plans
    assert work.keyframes == profile.keyframes.capacity and work.max_chunk == fit.TENSORRT_MAX_CHUNK
    export = fit.memory_plan(dims, weights, work, profile.keyframes.size, tb.target_budget(target))
    assert est.plan == export


def test_budget_comes_from_the_profile_or_the_target(tmp_path: Path) -> None:
    own = load_profile(_write(tmp_path, memory_budget_gb=64.0, overhead_gb=2.0))
    assert check_memory(own).budget_gb == 64.0
    data = yaml.safe_load((PROFILE_DIR / "orin-nano.yaml").read_text())
    data["device"] = "watch"
    path = tmp_path / "watch.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match="memory_budget_gb.*no export target"):
        check_memory(load_profile(path))


def test_published_sizes() -> None:
    three = KNOWN_MODELS["qwen2.5-vl-3b"]
    assert 3.7e9 < three.text_params() + three.vision_params() < 3.8e9  # "3B" is 3.75 B with vision
    seven = KNOWN_MODELS["qwen2.5-vl-7b"]
    assert 8.2e9 < seven.text_params() + seven.vision_params() < 8.35e9  # 8.29 B
