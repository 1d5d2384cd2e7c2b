"""docs/architecture.md stays true to the code, and the code points at it.

* every repository path, ``egovlm.*`` dotted name, class name and constant the page names in
  backticks exists (a path with ``<placeholder>`` parts must match at least one file);
* its relative links resolve, anchors included;
* every ``docs/architecture.md#<heading>`` written anywhere in the project names a heading of the page;
* no project file outside docs/ cites the founding design brief that lived outside the repository:
  design references point at this page instead.
"""

from __future__ import annotations

import builtins
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"

# First path components that are the repository's own (anything else in backticks, like RUN/final or
# DIR/<part>.json, is a placeholder for a user's folder).
TOP_DIRS = {
    "egovlm",
    "experiments",
    "tests",
    "scripts",
    "configs",
    "docs",
    "native",
    "models",
}
TOP_FILES = {"pyproject.toml", "Makefile", "README.md", "constraints.txt", "CMakeLists.txt", "CHANGELOG.md"}
# Names of other projects' classes the page mentions (TRL's trainer, ONNX Runtime's int4 op).
EXTERNAL_NAMES = {"GRPOTrainer", "MatMulNBits"}
FILE_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml", ".py", ".md", ".csv", ".onnx", ".plan", ".txt", ".toml")
# Built from two pieces so this file does not match itself.
BRIEF_CITATION = re.compile(r"(?<![A-Za-z])" + "DESIGN" + r"\.md")  # not REDESIGN.md


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def outside_fences(text: str) -> str:
    """The Markdown with fenced code blocks blanked out (their lines are not prose or headings)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


def backticked(text: str) -> list[str]:
    """Inline-code spans without spaces, outside fenced blocks, with a trailing ``()`` removed."""
    spans = re.findall(r"`([^`\s]+)`", outside_fences(text))
    return [s.removesuffix("()") for s in spans]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    headings = re.findall(
        r"^#{1,6}\s+(.+?)\s*#*\s*$", outside_fences(markdown.read_text(encoding="utf-8")), re.M
    )
    return {slug(h) for h in headings}


def python_sources() -> dict[Path, str]:
    dirs = ["egovlm", "scripts", "experiments"]
    return {p: p.read_text(encoding="utf-8") for d in dirs for p in (ROOT / d).rglob("*.py")}


def defines(source: str, name: str) -> bool:
    """``name`` is a class, function, method, attribute or assignment target in ``source``."""
    pattern = rf"^\s*(?:(?:async\s+)?def|class)\s+{re.escape(name)}\b|^\s*(?:self\.)?{re.escape(name)}\s*[:=]"
    return re.search(pattern, source, re.M) is not None


def module_file(dotted: str) -> Path | None:
    """The source file of an ``egovlm.*`` module (import path = file path), or None."""
    if dotted != "egovlm" and not dotted.startswith("egovlm."):
        return None
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py"), base.with_suffix(".pyi")):
        if candidate.is_file():
            return candidate
    return None


def project_files() -> list[Path]:
    """Tracked and new (not ignored) files of the checkout; the whole tree when git is unavailable."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        return [ROOT / name for name in listed if (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "build", "__pycache__", ".cache", "runs"}
        return [
            p
            for p in ROOT.rglob("*")
            if p.is_file() and not any(part in skip or part.startswith(".venv") for part in p.parts)
        ]


def test_repository_paths_named_in_the_page_exist() -> None:
    missing = []
    for token in backticked(doc_text()):
        path = token.split("::")[0].split("#")[0]
        first = path.split("/")[0]
        if not ((first in TOP_DIRS and "/" in path) or path in TOP_FILES):
            continue
        pattern = re.sub(r"<[^>]*>", "*", path).rstrip("/")
        found = (
            list(ROOT.glob(pattern))
            if "*" in pattern
            else [ROOT / pattern]
            if (ROOT / pattern).exists()
            else []
        )
        if not found:
            missing.append(token)
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def resolves(dotted: str) -> bool:
    """``egovlm.a.b`` is a module, or a module's attribute (``egovlm.contract.parse_answer``), or a
    member of one (``egovlm.edge.runtime.EdgeRuntime.forget``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):  # the longest prefix that is a module
        source = module_file(".".join(parts[:cut]))
        if source is not None:
            text = source.read_text(encoding="utf-8")
            attributes = parts[cut:]
            return len(attributes) <= 2 and all(defines(text, a) for a in attributes)
    return False


def test_dotted_names_in_the_page_resolve_to_code() -> None:
    dotted = [t for t in backticked(doc_text()) if re.fullmatch(r"egovlm(\.\w+)+", t)]
    wrong = [t for t in dotted if not t.endswith(FILE_SUFFIXES) and not resolves(t)]
    assert not wrong, f"docs/architecture.md names modules or attributes that do not exist: {wrong}"


def test_classes_and_constants_in_the_page_are_defined() -> None:
    sources = python_sources()
    wrong = []
    for token in backticked(doc_text()):
        m = re.fullmatch(r"([A-Z]\w*)(?:\.(\w+))?", token)
        if m is None or m.group(1) in EXTERNAL_NAMES:
            continue
        name, member = m.groups()
        is_class = not name.isupper()
        if hasattr(builtins, name) or (not is_class and "_" not in name):  # None; DIR and K are placeholders
            continue
        if not is_class and member is None:  # a constant
            ok = any(re.search(rf"^{name}\s*[:=]", s, re.M) for s in sources.values())
        elif is_class:
            homes = [s for s in sources.values() if re.search(rf"^\s*class\s+{name}\b", s, re.M)]
            ok = bool(homes) and (member is None or any(defines(s, member) for s in homes))
        else:
            continue
        if not ok:
            wrong.append(token)
    assert not wrong, f"docs/architecture.md names classes, members or constants that do not exist: {wrong}"


def test_links_in_the_page_resolve() -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", outside_fences(doc_text())):
        if re.match(r"[a-z]+://", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (DOC.parent / file_part).resolve() if file_part else DOC
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"docs/architecture.md has broken links: {broken}"


def test_references_to_the_page_name_its_headings() -> None:
    known = anchors(DOC)
    broken = []
    for path in project_files():
        if path.suffix in {".png", ".safetensors", ".pyc"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for anchor in re.findall(r"docs/architecture\.md#([\w-]+)", text):
            if anchor not in known:
                broken.append(f"{path.relative_to(ROOT)}: #{anchor}")
    assert not broken, f"references to docs/architecture.md headings that do not exist: {broken}"


def test_no_file_outside_docs_cites_the_old_design_brief() -> None:
    citing = []
    for path in project_files():
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "docs":
            continue
        if BRIEF_CITATION.search(path.read_bytes().decode("utf-8", errors="replace")):
            citing.append(str(rel))
    assert not citing, (
        f"{citing} cite the design brief, which is not in the repository: point at the matching "
        "section of docs/architecture.md instead (docs/architecture.md#the-contract, …)"
    )


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("The contract", "the-contract"),
        ("Status: verified here vs awaiting a device", "status-verified-here-vs-awaiting-a-device"),
        ("Training (train/)", "training-train"),
        ("`egovlm data prepare` and the cache", "egovlm-data-prepare-and-the-cache"),
    ],
)
def test_slug_follows_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
