"""The one way our YAML configs are read: file → dotted overrides → a validated pydantic type.

Every config of the project (training recipes, pretraining recipes, device profiles, export targets,
parity thresholds, selector parameters) goes through :func:`load`, or through its pieces when a loader
needs a step in between (:func:`read`, then the loader's own step, then :func:`validate`):

* :func:`read_yaml`: the file must exist, parse (a syntax error names the file, line and column) and
  hold a mapping at the top level (an empty file is an empty mapping);
* :func:`apply_overrides`: ``a.b.c=value`` on top of the file, the value parsed as YAML (``true``,
  ``1e-5``, ``[a, b]``); each key remembers which override set it (:class:`Sources`);
* :func:`validate`: into a pydantic model or pydantic dataclass (:class:`pydantic.TypeAdapter` takes
  both); every error names where the bad key came from (the file, or the override that set it), the
  dotted key and what is wrong with it (unknown, missing, or the value's problem).

Errors are :class:`ConfigError` (a ``ValueError``), or the subclass the caller passes as ``error``
(each stage has its own: ``egovlm.train.config.ConfigError``, ``egovlm.edge.profile.ProfileError``,
``egovlm.export.targets.ExportConfigError``). The class also words the problems (:class:`Wording`).

Core module: no torch or transformers (it runs on the device).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

T = TypeVar("T")


@dataclass(frozen=True)
class Wording:
    """How a problem at a dotted ``key`` reads; ``msg`` is the validator's message."""

    unknown: str
    missing: str
    invalid: str


KEY_WORDING = Wording(
    unknown="{key}: unknown key", missing="{key}: missing required key", invalid="{key}: {msg}"
)
FIELD_WORDING = Wording(
    unknown="unknown field '{key}'", missing="missing field '{key}'", invalid="field '{key}': {msg}"
)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file (or override) and the key."""

    wording: ClassVar[Wording] = KEY_WORDING


@dataclass
class Sources:
    """Where a tree's keys came from: ``file`` (a path, or any text naming the source), except the
    dotted keys an override set, which map to that override's description."""

    file: str
    overrides: dict[str, str] = field(default_factory=dict)

    def origin(self, key: str) -> str:
        """The source of dotted ``key``: the last override that set it, a section above it or a
        key below it; else the file."""
        for set_key, origin in reversed(self.overrides.items()):
            if key == set_key or key.startswith(set_key + ".") or set_key.startswith(key + "."):
                return origin
        return self.file


def parse_yaml(path: Path | str, error: type[ConfigError] = ConfigError) -> Any:
    """The YAML document in ``path`` (None when empty). A missing file or a syntax error raises
    ``error`` naming the file (and the line and column of the problem)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.MarkedYAMLError as e:
        raise error(f"{_mark(path, e.problem_mark)}: not valid YAML: {_yaml_problem(e)}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None


def _mark(path: Path | str, mark: yaml.Mark | None) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _yaml_problem(e: yaml.MarkedYAMLError) -> str:
    problem = e.problem or "syntax error"
    if e.context:
        at = e.context_mark
        where = f" at line {at.line + 1}, column {at.column + 1}" if at is not None else ""
        problem += f" ({e.context}{where})"
    return problem


def read_yaml(path: Path | str, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """:func:`parse_yaml`, and the top level must be a mapping (an empty file is ``{}``)."""
    tree = parse_yaml(path, error)
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise error(f"{path}: the top level must be a mapping of keys, got {type(tree).__name__}")
    return tree


def parse_override(
    text: str, error: type[ConfigError] = ConfigError, on_top_of: str = ""
) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], the value parsed as YAML; None when empty)."""
    where = f" (on top of {on_top_of})" if on_top_of else ""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise error(f"override {text!r} must look like key=value (e.g. section.key=20){where}")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise error(f"override {text!r}: empty component in key {key.strip()!r}{where}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.MarkedYAMLError as e:
        raise error(f"override {text!r}{where}: the value is not valid YAML: {_yaml_problem(e)}") from None
    except yaml.YAMLError as e:  # e.g. a control character
        raise error(f"override {text!r}{where}: the value is not valid YAML: {e}") from None
    return parts, value


def apply_overrides(
    tree: dict[str, Any], overrides: Iterable[str], sources: Sources, error: type[ConfigError] = ConfigError
) -> None:
    """Set each ``a.b.c=value`` in ``tree`` (in place; later ones win), recording it in ``sources``."""
    for text in overrides:
        parts, value = parse_override(text, error, sources.file)
        origin = f"override {text!r} (on top of {sources.file})"
        node = tree
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise error(f"{origin}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
        dotted = ".".join(parts)
        sources.overrides.pop(dotted, None)  # re-insert: the latest override of a key is looked up first
        sources.overrides[dotted] = origin


def read(
    path: Path | str, overrides: Sequence[str] | None = None, error: type[ConfigError] = ConfigError
) -> tuple[dict[str, Any], Sources]:
    """The raw tree of a YAML file with ``overrides`` applied, and where each key came from."""
    tree = read_yaml(path, error)
    sources = Sources(str(path))
    apply_overrides(tree, overrides or [], sources, error)
    return tree, sources


def validate(
    tree: Any,
    model: type[T],
    sources: Sources | str,
    error: type[ConfigError] = ConfigError,
    prefix: str = "",
) -> T:
    """``tree`` as a ``model`` (pydantic model or pydantic dataclass). Every validation error is
    reported: its source, dotted key (under ``prefix``, the tree's own place in a bigger file) and
    problem. ``sources`` may be plain text naming where the tree came from."""
    if isinstance(sources, str):
        sources = Sources(sources)
    try:
        return TypeAdapter(model).validate_python(tree)
    except ValidationError as e:
        raise error(describe(e.errors(), sources, error.wording, prefix)) from None


def describe(errors: Sequence[ErrorDetails], sources: Sources, wording: Wording, prefix: str = "") -> str:
    """pydantic's errors as ``<source>: <problem>; <problem>``, one group per source, in order."""
    by_origin: dict[str, list[str]] = {}
    for err in errors:
        key = ".".join([prefix, *(str(p) for p in err["loc"])] if prefix else [str(p) for p in err["loc"]])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            text = wording.unknown.format(key=key)
        elif err["type"] in ("missing", "missing_argument", "missing_keyword_only_argument"):
            text = wording.missing.format(key=key)
        elif key:
            text = wording.invalid.format(key=key, msg=msg)
        else:
            text = msg
        by_origin.setdefault(sources.origin(key) if key else sources.file, []).append(text)
    return "; ".join(f"{origin}: {'; '.join(texts)}" for origin, texts in by_origin.items())


def load(
    path: Path | str,
    model: type[T],
    overrides: Sequence[str] | None = None,
    error: type[ConfigError] = ConfigError,
) -> T:
    """Read ``path``, apply dotted ``overrides``, validate into ``model``: the whole loader."""
    tree, sources = read(path, overrides, error)
    return validate(tree, model, sources, error)
