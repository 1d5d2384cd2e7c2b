"""The TensorRT API the code uses exists in every supported release, checked without a GPU.

``import tensorrt`` needs NVIDIA's libraries, which these machines cannot have, but each release's
Python bindings are a wheel on PyPI whose ``tensorrt.so`` string table names every class, method,
property and enum member pybind11 registers. scripts/fetch-trt-bindings.sh (run by ``make setup``)
puts them in .cache/trt-bindings/<release>/.

What this proves: every ``trt.X`` / ``trt.X.Y`` name, and every method or property called on the
TensorRT objects (builder, network, parser, config, profile, runtime, engine, context) in
egovlm/export/tensorrt_build.py and egovlm/edge/backends/tensorrt_backend.py, is a name that release's bindings
define; names only some releases have are used only behind the version gates of
:mod:`egovlm.trt_support`, whose thresholds are checked against the tables too; TensorRT 8.6
(JetPack 6.0) lacks ``STRONGLY_TYPED`` and is refused by the support check with the JetPack upgrade.

What it cannot prove: that a name belongs to the class it is called on (``read`` exists somewhere),
argument types and order, enum values, or behaviour. Those await a device (README's list).
"""

from __future__ import annotations

import ast
import re
import sys
import types
from functools import cache
from pathlib import Path

import pytest

from egovlm import trt_support
from egovlm.edge.backends import tensorrt_backend
from egovlm.export import tensorrt_build

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "trt-bindings"
SCRIPT = REPO / "scripts" / "fetch-trt-bindings.sh"
FETCH = "bash scripts/fetch-trt-bindings.sh .cache/trt-bindings   (part of `make setup`; needs PyPI once)"
SOURCES = [Path(tensorrt_build.__file__), Path(tensorrt_backend.__file__)]

# Variables holding TensorRT objects in SOURCES (the test fails below if a new one appears unnamed).
TRT_OBJECTS = {"builder", "network", "parser", "config", "profile", "runtime", "engine", "context"}
# Methods the code implements on TensorRT's trampoline classes (IStreamWriter, IStreamReaderV2).
OVERRIDES = {"write", "read", "seek"}
# Code only some releases can run -> the gate (egovlm.trt_support) checked before it runs: a branch
# calling one method, or a whole function (everything named inside it is gated).
GATED = {"build_serialized_network_to_stream": trt_support.STREAM_BUILD_SINCE}
GATED_FUNCTIONS = {
    "_stream_writer": trt_support.STREAM_BUILD_SINCE,
    "_plan_reader": trt_support.STREAM_LOAD_SINCE,
}
# Results of calls on TensorRT objects that are plain values (or only used as buffers).
NOT_OBJECTS = {"name", "serialized", "writer", "logger"}


def releases() -> list[tuple[str, str, str]]:
    """(release dir, requirement, role) from the fetch script's table: one source of truth."""
    rows = re.findall(r'^\s*"(\S+)\s+(\S+)\s+\S+\s+(supported|refused)"', SCRIPT.read_text(), re.M)
    assert rows, f"no release table in {SCRIPT}"
    return rows


class StringTable:
    """The NUL-terminated strings of a shared object. Linkers merge a string into the tail of a
    longer one (``Logger`` is stored as the end of ``ILogger``), so a name is "in" the table when
    some string ends with it: ``name + NUL`` occurs in the file."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name.encode() + b"\0") in self.data


@cache
def bindings(release: str) -> tuple[str, StringTable]:
    """(``__version__`` of the wheel, the .so's string table). Missing: fail with the fix."""
    so, init = CACHE / release / "tensorrt.so", CACHE / release / "__init__.py"
    if not (so.is_file() and init.is_file()):
        pytest.fail(f"TensorRT {release} bindings are not in {CACHE}; fetch them with:\n    {FETCH}")
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', init.read_text(), re.M)
    assert m, f"{init}: no __version__"
    return m.group(1), StringTable(so.read_bytes())


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ["a", "b", "c"]; ``self.engine.x`` -> ["engine", "x"]; else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    if node.id != "self":
        parts.append(node.id)
    return parts[::-1]


def _handles_tensorrt(function: ast.AST) -> bool:
    """Functions that touch TensorRT: they name ``trt`` or the engine/context a TrtEngine holds.
    Elsewhere ``profile`` or ``engine`` may be anything (a planned profile, a workload)."""
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and node.id == "trt":
            return True
        if isinstance(node, ast.Attribute) and _chain(node) in (["engine"], ["context"]):
            return True
    return False


def _units(tree: ast.Module) -> list[ast.FunctionDef]:
    """Module-level functions and the methods of module-level classes (nested code stays inside)."""
    units = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        units += [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    return units


def used_names() -> dict[str, dict[str, tuple[int, ...]]]:
    """Every TensorRT name SOURCES use -> {where: the gate that place runs behind, () if none}.
    ``trt.X.Y`` gives X and Y; ``<object>.m`` gives m (objects: TRT_OBJECTS inside functions that
    handle TensorRT); methods the code overrides on ``trt.*`` base classes give their names."""
    found: dict[str, dict[str, tuple[int, ...]]] = {}

    def add(name: str, where: str, gate: tuple[int, ...]) -> None:
        found.setdefault(name, {})[where] = GATED.get(name, gate)

    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for parent in ast.walk(tree):  # only outermost chains count: trt.Logger.WARNING, not trt.Logger
            for child in ast.iter_child_nodes(parent):
                child.parent = parent  # type: ignore[attr-defined]
        for unit in _units(tree):
            if not _handles_tensorrt(unit):
                continue
            gate = GATED_FUNCTIONS.get(unit.name, ())
            for node in ast.walk(unit):
                if isinstance(node, ast.Attribute) and not isinstance(node.parent, ast.Attribute):  # type: ignore[attr-defined]
                    chain = _chain(node)
                    if not chain or len(chain) < 2:
                        continue
                    where = f"{path.name}: {unit.name}: {'.'.join(chain)}"
                    if chain[0] == "trt":
                        for name in chain[1:]:
                            if name != "__init__":
                                add(name, where, gate)
                    elif chain[0] in TRT_OBJECTS:
                        add(chain[1], where, gate)
                if isinstance(node, ast.ClassDef) and any(
                    (_chain(b) or [""])[0] == "trt" for b in node.bases
                ):
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and item.name != "__init__":
                            add(item.name, f"{path.name}: override {node.name}.{item.name}", gate)
    # DataType members the code names as strings (the manifest's dtypes -> TensorRT's, host dtypes)
    for name in [*tensorrt_backend._TRT_DTYPE_NAMES.values(), *tensorrt_backend._NUMPY_DTYPES]:
        add(name, "tensorrt_backend.py: DataType member by name", ())
    return found


@pytest.fixture(scope="module")
def names() -> dict[str, dict[str, tuple[int, ...]]]:
    return used_names()


def test_the_collector_sees_the_calls_that_matter(names: dict[str, dict[str, tuple[int, ...]]]) -> None:
    expected = {
        "Builder", "Runtime", "Logger", "WARNING", "OnnxParser", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED",
        "MemoryPoolType", "WORKSPACE", "TensorIOMode", "INPUT", "DataType", "HALF",
        "create_network", "parse_from_file", "create_builder_config", "set_memory_pool_limit",
        "create_optimization_profile", "set_shape", "add_optimization_profile", "build_serialized_network",
        "build_serialized_network_to_stream", "IStreamWriter", "IStreamReaderV2", "SeekPosition",
        "deserialize_cuda_engine", "create_execution_context", "num_io_tensors", "get_tensor_name",
        "get_tensor_mode", "get_tensor_dtype", "get_tensor_shape", "get_tensor_profile_shape",
        "num_optimization_profiles", "set_optimization_profile_async", "set_input_shape",
        "set_tensor_address", "execute_async_v3", "write", "read", "seek",
    }  # fmt: skip
    assert sorted(expected - set(names)) == []


def test_every_trt_object_variable_is_known() -> None:
    """A TensorRT object bound to a new variable name would escape the collector: fail instead."""
    calls_on = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                chain = _chain(node.value.func)
                if chain and (chain[0] in TRT_OBJECTS | {"trt"}) and len(chain) >= 2:
                    for target in node.targets:
                        target_chain = _chain(target)
                        if target_chain:
                            calls_on.add(target_chain[-1])
    untracked = calls_on - TRT_OBJECTS - NOT_OBJECTS
    assert untracked == set(), f"add these TensorRT object variables to TRT_OBJECTS: {untracked}"


@pytest.mark.parametrize("release", [r for r, _, role in releases() if role == "supported"])
def test_every_name_exists_in_each_supported_release(
    release: str, names: dict[str, dict[str, tuple[int, ...]]]
) -> None:
    version, table = bindings(release)
    init = (CACHE / release / "__init__.py").read_text()  # __version__ and aliases live there
    assert trt_support.support_problem(version) is None
    parsed = trt_support.parse_version(version)[:2]
    missing = {
        name: sorted(w for w, gate in where.items() if parsed >= gate)
        for name, where in names.items()
        if name not in table and not re.search(rf"^{re.escape(name)}\s*=", init, re.M)
    }
    missing = {name: where for name, where in missing.items() if where}
    assert missing == {}, f"TensorRT {version} bindings lack: {missing}"


def test_gates_match_the_release_that_added_each_name(names: dict[str, dict[str, tuple[int, ...]]]) -> None:
    """Every gate is needed (some name behind it is absent from 10.3, the floor) and late enough
    (every name behind it is present in each supported release from the gate on)."""
    _, floor = bindings("10.3.0")
    gates = set(GATED.values()) | set(GATED_FUNCTIONS.values())
    for gate in gates:
        behind = {n for n, where in names.items() if gate in where.values()}
        assert behind - set(filter(floor.__contains__, behind)), f"nothing behind gate {gate} is new in 10.3"
    for release, _, role in releases():
        version, table = bindings(release)
        parsed = trt_support.parse_version(version)[:2]
        if role == "supported":
            late = {n for n, where in names.items() if any(g and parsed >= g for g in where.values())}
            assert sorted(n for n in late if n not in table) == [], version
    assert "build_serialized_network_to_stream" not in bindings("10.3.0")[1]
    assert "IStreamReaderV2" not in floor and "IStreamWriter" not in floor


def test_the_streaming_helpers_follow_the_gates() -> None:
    for version, build, load in [
        ("10.3.0", False, False),
        ("10.9.0", False, True),
        ("10.13.3.9", True, True),
    ]:
        trt = types.SimpleNamespace(__version__=version)
        assert (trt_support.streams_build(trt), trt_support.streams_load(trt)) == (build, load)


def test_tensorrt_8_6_lacks_strongly_typed_and_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    [(release, _, _)] = [r for r in releases() if r[2] == "refused"]
    version, table = bindings(release)
    assert trt_support.parse_version(version)[:2] == (8, 6)
    assert "STRONGLY_TYPED" not in table and "NetworkDefinitionCreationFlag" in table
    assert "execute_async_v3" in table  # the table is real: 8.6 has the v3 execution API
    problem = trt_support.support_problem(version)
    assert problem is not None and "JetPack 6.0 ships 8.6" in problem and "JetPack 6.1 or newer" in problem
    stand_in = types.ModuleType("tensorrt")
    stand_in.__version__ = version  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", stand_in)
    with pytest.raises(trt_support.TensorRTUnsupportedError, match=re.escape(problem)):
        trt_support.import_tensorrt()


def test_supported_releases_pass_the_import_check(monkeypatch: pytest.MonkeyPatch) -> None:
    for release, _, role in releases():
        if role != "supported":
            continue
        version, _ = bindings(release)
        stand_in = types.ModuleType("tensorrt")
        stand_in.__version__ = version  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "tensorrt", stand_in)
        assert trt_support.import_tensorrt() is stand_in
    newest = max(
        trt_support.parse_version(bindings(r)[0])[:2] for r, _, role in releases() if role == "supported"
    )
    assert newest == trt_support.NEWEST_CHECKED  # doctor's "newer than checked" note is about this table
