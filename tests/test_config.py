"""The shared config loader (egovlm.config): every mistake names the file (or the override) and the
dotted key, and every stage's loader goes through it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

from egovlm import config
from egovlm.config import ConfigError, load, parse_override, read

STRICT = ConfigDict(extra="forbid")


@dataclass(config=STRICT)
class Inner:
    size: int = Field(default=4, ge=1)
    mode: Literal["a", "b"] = "a"


@dataclass(config=STRICT)
class Outer:
    name: str
    inner: Inner = Field(default_factory=Inner)


class InnerModel(BaseModel):
    model_config = STRICT
    size: int = Field(default=4, ge=1)
    mode: Literal["a", "b"] = "a"


class OuterModel(BaseModel):
    model_config = STRICT
    name: str
    inner: InnerModel = Field(default_factory=InnerModel)


MODELS = [Outer, OuterModel]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_loads_a_dataclass_or_a_model_with_overrides(tmp_path: Path, model: type[Outer | OuterModel]) -> None:
    path = write(tmp_path, "name: x\ninner: {size: 2}\n")
    cfg = load(path, model, ["inner.mode=b", "name=y"])
    assert (cfg.name, cfg.inner.size, cfg.inner.mode) == ("y", 2, "b")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_unknown_key_names_the_file_and_the_dotted_key(tmp_path: Path, model: type) -> None:
    path = write(tmp_path, "name: x\ninner: {sise: 2}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: inner\.sise: unknown key$"):
        load(path, model)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_missing_key_and_bad_values_are_all_named(tmp_path: Path, model: type) -> None:
    path = write(tmp_path, "inner: {size: 0, mode: c}\n")
    with pytest.raises(ConfigError) as err:
        load(path, model)
    text = str(err.value)
    assert text.startswith(f"{path}: ")
    assert "name: missing required key" in text
    assert "inner.size: Input should be greater than or equal to 1" in text
    assert "inner.mode: Input should be 'a' or 'b'" in text


def test_an_error_names_the_override_that_supplied_the_bad_key(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError) as err:
        load(path, Outer, ["inner.size=3", "inner.size=-1"])
    assert str(err.value) == (
        f"override 'inner.size=-1' (on top of {path}): inner.size: Input should be greater than or equal to 1"
    )
    # A whole section set by an override owns the keys below it.
    with pytest.raises(
        ConfigError,
        match=rf"^override 'inner=\{{bogus: 1\}}' \(on top of {re.escape(str(path))}\): inner\.bogus",
    ):
        load(path, Outer, ["inner={bogus: 1}"])
    # Keys the override did not touch are still the file's.
    bad = write(tmp_path, "name: x\ninner: {mode: z}\n", "bad.yaml")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}: inner\.mode"):
        load(bad, Outer, ["inner.size=3"])


def test_override_syntax(tmp_path: Path) -> None:
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=") == (["a"], None)
    assert parse_override("a=1e-5") == (["a"], "1e-5")  # YAML 1.1: a string (the models coerce it)
    with pytest.raises(ConfigError, match=r"must look like key=value"):
        parse_override("frames")
    with pytest.raises(ConfigError, match=r"empty component in key 'a\.\.b'"):
        parse_override("a..b=1")
    with pytest.raises(ConfigError, match=r"override 'a=\[1' .*not valid YAML: expected ',' or '\]'"):
        parse_override("a=[1", on_top_of="c.yaml")
    path = write(tmp_path, "name: x\n")
    with pytest.raises(
        ConfigError, match=rf"override 'name\.first=a' \(on top of {re.escape(str(path))}\): name is a value"
    ):
        read(path, ["name.first=a"])


def test_bad_yaml_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ninner:\n  size: [1, 2\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))}:4:1: not valid YAML: expected ',' or '\]'.*line 3, column 9",
    ):
        load(path, Outer)
    path = write(tmp_path, "name: x\n  size: 1\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))}:2:7: not valid YAML: mapping values are not allowed here",
    ):
        load(path, Outer)


def test_missing_file_empty_file_and_non_mapping_top_level(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=rf"config file not found: {re.escape(str(tmp_path / 'nope.yaml'))}"
    ):
        load(tmp_path / "nope.yaml", Outer)
    assert read(write(tmp_path, ""))[0] == {}
    comment = write(tmp_path, "# nothing\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(comment))}: name: missing required key$"):
        load(comment, Outer)
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}: the top level must be a mapping of keys, got list"
    ):
        load(path, Outer)


def test_the_caller_chooses_the_error_class_and_its_wording(tmp_path: Path) -> None:
    class StageError(ConfigError):
        wording = config.FIELD_WORDING

    path = write(tmp_path, "inner: {sise: 2, size: 0}\n")
    with pytest.raises(StageError) as err:
        load(path, Outer, error=StageError)
    assert str(err.value) == (
        f"{path}: missing field 'name'; "
        "field 'inner.size': Input should be greater than or equal to 1; unknown field 'inner.sise'"
    )
    with pytest.raises(StageError, match="config file not found"):
        load(tmp_path / "nope.yaml", Outer, error=StageError)


def test_validate_a_section_under_its_prefix() -> None:
    with pytest.raises(ConfigError, match=r"^f\.yaml: inner\.size: Input should be greater"):
        config.validate({"size": 0}, Inner, "f.yaml", prefix="inner")
    assert config.validate({"size": 2}, Inner, "f.yaml").size == 2


# -- every stage's loader goes through it: a YAML syntax error names the file and the line ----------

BROKEN = "a: [1, 2\n"  # the flow sequence never closes: reported at line 2, column 1


def _broken(tmp_path: Path) -> Path:
    return write(tmp_path, BROKEN, "broken.yaml")


def _names_the_line(err: pytest.ExceptionInfo[ConfigError], path: Path) -> None:
    assert f"{path}:2:1: not valid YAML" in str(err.value)


def test_train_recipe_reports_yaml_errors_with_the_line(tmp_path: Path) -> None:
    from egovlm.train.config import ConfigError as TrainConfigError
    from egovlm.train.config import load_config

    path = _broken(tmp_path)
    with pytest.raises(TrainConfigError) as err:
        load_config(path)
    _names_the_line(err, path)


def test_pretrain_recipe_reports_yaml_errors_with_the_line(tmp_path: Path) -> None:
    from egovlm.train.config import ConfigError as TrainConfigError
    from experiments.mini.pretrain import load_pretrain_config

    path = _broken(tmp_path)
    with pytest.raises(TrainConfigError) as err:
        load_pretrain_config(path)
    _names_the_line(err, path)


def test_profile_reports_yaml_errors_with_the_line(tmp_path: Path) -> None:
    from egovlm.edge.profile import ProfileError, load_profile

    path = _broken(tmp_path)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    _names_the_line(err, path)


def test_selector_params_report_yaml_errors_with_the_line(tmp_path: Path) -> None:
    from egovlm.keyframes import SelectorParams

    path = _broken(tmp_path)
    with pytest.raises(ConfigError) as err:
        SelectorParams.from_yaml(path, section="selector")
    _names_the_line(err, path)
    good = write(tmp_path, "selector:\n  novelty: -1\n", "sel.yaml")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(good))}: selector\.novelty: Input should be greater"
    ):
        SelectorParams.from_yaml(good, section="selector")


def test_export_targets_report_yaml_errors_with_the_line(tmp_path: Path) -> None:
    from egovlm.export.targets import ExportConfigError, load_targets

    path = _broken(tmp_path)
    with pytest.raises(ExportConfigError) as err:
        load_targets(path)
    _names_the_line(err, path)
    typo = write(
        tmp_path,
        "dev: {runtime: onnxruntime, precisions: [fp32], default_precision: fp32,"
        " memory_gb: 1, budget_fraction: 0.5, memory_gib: 2}\n",
        "typo.yaml",
    )
    with pytest.raises(
        ExportConfigError, match=rf"^{re.escape(str(typo))}: target 'dev': unknown field 'memory_gib'$"
    ):
        load_targets(typo)


def test_parity_thresholds_report_yaml_errors_with_the_line(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from egovlm.export.parity import load_thresholds
    from egovlm.export.targets import ExportConfigError

    path = _broken(tmp_path)
    with pytest.raises(ExportConfigError) as err:
        load_thresholds("fp16", path)
    _names_the_line(err, path)
    bad = write(tmp_path, "fp16: {top1_agreement: high}\n", "parity.yaml")
    with pytest.raises(
        ExportConfigError,
        match=rf"^{re.escape(str(bad))}: field 'fp16.top1_agreement': Input should be a valid number",
    ):
        load_thresholds("fp16", bad)
    assert load_thresholds("int8")["top1_agreement"] == 0.8  # the shipped file still loads


def test_stage_errors_are_config_errors() -> None:
    from egovlm.edge.profile import ProfileError
    from egovlm.export.targets import ExportConfigError
    from egovlm.train.config import ConfigError as TrainConfigError

    for cls in (ProfileError, ExportConfigError, TrainConfigError):
        assert issubclass(cls, ConfigError) and issubclass(cls, ValueError)
