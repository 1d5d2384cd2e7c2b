"""``bench all``: every part runs, a failing part is recorded and does not stop the others."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from egovlm.benchmarks import all as bench_all
from egovlm.benchmarks.report import Report


def _ok(name: str, ran: list[str]) -> bench_all.Part:
    def part(out: Path, quick: bool) -> Report:
        ran.append(name)
        report = Report(name, params={"quick": quick}, rows=[{"impl": name, "ms": 1.5}])
        report.write(out)
        return report

    return part


def _boom(out: Path, quick: bool) -> Report:
    raise RuntimeError("the device fell off the table")


def test_run_all_continues_past_a_failing_part(tmp_path: Path) -> None:
    ran: list[str] = []
    parts = {"first": _ok("first", ran), "broken": _boom, "last": _ok("last", ran)}
    outcomes = bench_all.run_all(tmp_path, quick=True, parts=parts, echo=lambda s: None)
    assert [o.part for o in outcomes] == ["first", "broken", "last"]
    assert [o.ok for o in outcomes] == [True, False, True]
    assert ran == ["first", "last"]
    assert "RuntimeError: the device fell off the table" in str(outcomes[1].error)
    summary = (tmp_path / "summary.md").read_text()
    assert "| broken | FAILED |" in summary and "| last | ok |" in summary
    assert "the device fell off the table" in summary
    assert "| last | 1.5 |" in summary  # each part's table is copied in
    assert (tmp_path / "first.json").is_file() and (tmp_path / "last.json").is_file()


def test_run_all_only_selects_and_rejects_unknown(tmp_path: Path) -> None:
    ran: list[str] = []
    parts = {"a": _ok("a", ran), "b": _ok("b", ran)}
    bench_all.run_all(tmp_path, parts=parts, only=["b"], echo=lambda s: None)
    assert ran == ["b"]
    with pytest.raises(ValueError, match="unknown part"):
        bench_all.run_all(tmp_path, parts=parts, only=["c"], echo=lambda s: None)


def test_cli_bench_all_exits_nonzero_when_a_part_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from egovlm.cli import app

    ran: list[str] = []
    monkeypatch.setattr(
        bench_all, "default_parts", lambda quick=False: {"broken": _boom, "fine": _ok("fine", ran)}
    )
    result = CliRunner().invoke(app, ["bench", "all", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert ran == ["fine"]
    assert "FAILED" in (tmp_path / "summary.md").read_text()


def test_cli_bench_all_exits_zero_when_all_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from egovlm.cli import app

    ran: list[str] = []
    monkeypatch.setattr(bench_all, "default_parts", lambda quick=False: {"fine": _ok("fine", ran)})
    result = CliRunner().invoke(app, ["bench", "all", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert ran == ["fine"]


def test_default_parts_cover_every_benchmark() -> None:
    names = list(bench_all.default_parts())
    assert names[:3] == ["ingest", "keyframes", "latency"] and names[-1] == "train"
    assert {"latency_slice", "roofline", "projection", "export"} <= set(names)
    assert names.index("roofline") < names.index("projection")  # projection reads roofline.json
    quick = list(bench_all.default_parts(quick=True))
    assert "projection" in quick and not {"latency_slice", "roofline"} & set(quick)  # < 10 min
