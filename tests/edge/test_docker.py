"""The JetPack Dockerfiles agree with the package (they cannot be built here: no arm64, no nvcr.io):

* each builds its venv with the interpreter its JetPack ships (6.x: CPython 3.10, 7.x: 3.12), recorded
  in an ARG and a LABEL, and pyproject's requires-python accepts it;
* the venv sees the system site-packages (JetPack's TensorRT bindings live there);
* the package is installed with the ``device`` extra, and no extra it installs (resolved through
  pyproject's self-references) nor any other pip line pulls torch, torchvision or transformers;
* no requires-python workaround is left; the Jetson onnxruntime-gpu index is a build ARG with a URL.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "egovlm" / "edge" / "docker"
# Dockerfile -> (the Python its JetPack ships, the base image it must start from)
EXPECTED = {
    "Dockerfile.jetpack6": ("3.10", re.compile(r"^nvcr\.io/nvidia/l4t-jetpack:r36\.4\.\d+$")),
    "Dockerfile.jetpack7": ("3.12", re.compile(r"^nvcr\.io/nvidia/")),
}
FORBIDDEN = {"torch", "torchvision", "torchaudio", "transformers"}
VALUE_OPTIONS = {"-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f", "--find-links"}
SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "!"}  # dropped before a command


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARG defaults (before and after FROM)
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments with ${ARG}s expanded)


def parse(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped; ARG defaults substituted."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: the last instruction ends with a backslash"
    args: dict[str, str] = {}
    instructions = []
    for text in logical:
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG":
            name, _, default = rest.strip().partition("=")
            args[name] = default.strip().strip('"')
        for name, value in args.items():
            rest = rest.replace("${" + name + "}", value)
        instructions.append((keyword, rest.strip()))
    return Dockerfile(args, instructions)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def resolve_extras(extras: set[str]) -> set[str]:
    """Every requirement name the core and these extras install, following ``egovlm[...]`` references."""
    project = pyproject()["project"]
    optional = project["optional-dependencies"]
    names = {Requirement(r).name.lower() for r in project["dependencies"]}
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in optional, f"pyproject.toml has no extra {extra!r}"
        for text in optional[extra]:
            req = Requirement(text)
            if req.name == project["name"]:
                todo += sorted(req.extras)
            else:
                names.add(req.name.lower())
    return names


def run_commands(df: Dockerfile) -> list[list[str]]:
    """Every simple shell command of every RUN as words: shlex keeps quoted strings whole and splits
    on the shell's operators (&&, ||, ;, |, parentheses)."""
    out: list[list[str]] = []
    for keyword, rest in df.instructions:
        if keyword != "RUN":
            continue
        lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in lexer:
            if token and set(token) <= set("();|&"):
                out += [words] if words else []
                words = []
            elif words or token not in SHELL_KEYWORDS:
                words.append(token)
        out += [words] if words else []
    return out


def pip_installs(df: Dockerfile) -> list[list[str]]:
    """The arguments of each ``pip install`` (also ``python -m pip install``)."""
    installs = []
    for words in run_commands(df):
        for i in range(len(words) - 1):
            if words[i].endswith("pip") and words[i + 1] == "install":
                installs.append(words[i + 2 :])
    return installs


def install_targets(args: list[str]) -> list[str]:
    """What a ``pip install`` installs: its arguments without options and the options' values."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def venv_interpreter(df: Dockerfile) -> tuple[str, list[str]]:
    """(X.Y, the venv command's arguments) of the ``pythonX.Y -m venv`` that makes the runtime's venv."""
    for words in run_commands(df):
        m = re.fullmatch(r"python(3\.\d+)", words[0])
        if m and words[1:3] == ["-m", "venv"]:
            return m.group(1), words[3:]
    raise AssertionError("no `pythonX.Y -m venv` in any RUN")


@pytest.fixture(params=sorted(EXPECTED))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    return request.param, parse(DOCKER / request.param)


def test_the_interpreter_is_jetpacks_and_the_package_accepts_it(dockerfile: tuple[str, Dockerfile]) -> None:
    name, df = dockerfile
    expected_python, base = EXPECTED[name]
    python, venv_args = venv_interpreter(df)
    assert python == expected_python == df.args["PYTHON_VERSION"], (
        f"{name}: venv made with python{python}, ARG PYTHON_VERSION={df.args['PYTHON_VERSION']}; "
        f"its JetPack ships CPython {expected_python}"
    )
    labels = " ".join(rest for kw, rest in df.instructions if kw == "LABEL")
    assert f'org.egovlm.python="{python}"' in labels
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert Version(python) in requires, f"{name}: requires-python {requires} refuses CPython {python}"
    assert "--system-site-packages" in venv_args, f"{name}: JetPack's TensorRT bindings are system packages"
    [from_line] = [rest for kw, rest in df.instructions if kw == "FROM"]
    assert base.match(from_line), from_line


def test_the_device_extra_is_installed_and_nothing_brings_torch(dockerfile: tuple[str, Dockerfile]) -> None:
    name, df = dockerfile
    installs = pip_installs(df)
    extras_installed: set[str] = set()
    for args in installs:
        assert not {"-r", "--requirement"} & set(args), f"{name}: a requirements file is not checked here"
        for arg in install_targets(args):
            m = re.fullmatch(r"(?:\./)?(?:src|\.)\[([\w,-]+)\]", arg)
            if m:
                extras_installed |= set(m.group(1).split(","))
            else:
                req = Requirement(arg)
                assert req.name.lower() not in FORBIDDEN, f"{name}: pip installs {arg}"
    assert "device" in extras_installed, f"{name}: no pip install of the package with the device extra"
    resolved = resolve_extras(extras_installed)
    assert not resolved & FORBIDDEN, f"{name}: extras {extras_installed} pull {resolved & FORBIDDEN}"
    text = (DOCKER / name).read_text()
    assert "--ignore-requires-python" not in text
    assert not re.search(r"--index-url[^\n]*torch|jetson-ai-lab[^\n]*torch", text)


def test_onnxruntime_gpu_comes_from_the_jetson_index_arg(dockerfile: tuple[str, Dockerfile]) -> None:
    name, df = dockerfile
    index = df.args["ORT_INDEX"]
    assert re.fullmatch(r"https://pypi\.jetson-ai-lab\.io/(jp6/cu126|sbsa/cu130)", index), index
    gpu = [a for a in pip_installs(df) if "onnxruntime-gpu" in a]
    assert gpu and all("--index-url" in a and index in a and "--no-deps" in a for a in gpu)
    uninstall = [w for w in run_commands(df) if w[:4] == ["pip", "uninstall", "-y", "onnxruntime"]]
    assert uninstall, f"{name}: the CPU onnxruntime must be removed before onnxruntime-gpu goes in"


def test_resolve_extras_sees_torch_where_it_is() -> None:
    """The resolver the test above trusts does find torch when an extra pulls it (train -> workstation)."""
    assert {"torch", "transformers"} <= resolve_extras({"train"})
    assert not resolve_extras({"device"}) & FORBIDDEN
