"""``egovlm doctor`` on this machine and on a fake Jetson (a file-system root and commands the
checks read through :class:`Host`)."""

from __future__ import annotations

import json
import stat
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

import egovlm.trt_support as support
from egovlm.edge.doctor import Check, Host, l4t_release, render, run_checks


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def fake_jetson(
    root: Path,
    bin_dir: Path,
    power_mode: str,
    mem_available_kb: int,
    l4t: tuple[int, str] = (36, "4.3"),
    dpkg: dict[str, str] | None = None,
    python: tuple[int, int, int] = (3, 10, 12),
) -> Host:
    """A Jetson file system (L4T release, board, memory, a USB camera), nvpmodel, and dpkg-query
    answering ``dpkg`` (package -> version; others are not installed)."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(
        f"# R{l4t[0]} (release), REVISION: {l4t[1]}, GCID: 38968081, BOARD: generic, EABI: aarch64, "
        "DATE: Wed Jan  8 2025\n"
    )
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_text(
        "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit\x00"
    )
    (root / "proc/meminfo").write_text(
        f"MemTotal:        7801040 kB\nMemAvailable:    {mem_available_kb} kB\nSwapTotal:             0 kB\n"
    )
    (root / "dev").mkdir()
    (root / "dev/video0").write_text("")
    (root / "sys/class/video4linux/video0").mkdir(parents=True)
    (root / "sys/class/video4linux/video0/name").write_text("HD USB Camera\n")
    bin_dir.mkdir()
    nvpmodel = bin_dir / "nvpmodel"
    nvpmodel.write_text(f"#!/bin/sh\necho 'NV Power Mode: {power_mode}'\necho 1\n")
    nvpmodel.chmod(nvpmodel.stat().st_mode | stat.S_IXUSR)
    cases = "".join(
        f"  *'{package}') printf '%s' '{version}'; exit 0;;\n" for package, version in (dpkg or {}).items()
    )
    query = bin_dir / "dpkg-query"
    query.write_text(f'#!/bin/sh\ncase "$*" in\n{cases}esac\necho "no packages found" >&2; exit 1\n')
    query.chmod(query.stat().st_mode | stat.S_IXUSR)

    def which(name: str) -> str | None:
        path = bin_dir / name
        return str(path) if path.exists() else None

    # GStreamer of a Jetson whose nvidia-l4t-gstreamer lost nvvidconv; everything else present
    return Host(root=root, which=which, has_element=lambda name: name != "nvvidconv", python=python)


def test_fake_jetson_reports_versions_power_memory_and_fixes(tmp_path: Path) -> None:
    host = fake_jetson(tmp_path / "root", tmp_path / "bin", "15W", 1_200_000)
    assert l4t_release(host) == "36.4.3"
    checks = by_name(run_checks(host))

    jp = checks["jetpack"]
    assert (
        jp.status == "ok"
        and "Orin Nano" in jp.detail
        and "L4T 36.4.3" in jp.detail
        and "JetPack 6.1/6.2" in jp.detail
    )

    power = checks["power mode"]
    assert power.status == "warn" and "15W" in power.detail and "nvpmodel -m 0" in power.fix

    mem = checks["memory"]
    assert mem.status == "warn" and "1.1 GB available of 7.4 GB" in mem.detail and "swap" in mem.fix

    assert (
        checks["gst nvvidconv"].status == "missing" and "nvidia-l4t-gstreamer" in checks["gst nvvidconv"].fix
    )
    assert checks["gst nvarguscamerasrc"].status == "ok"
    assert checks["camera /dev/video0"].detail.startswith("HD USB Camera → --source v4l2:///dev/video0")
    assert "csi://0" in checks["csi cameras"].detail
    # torch from PyPI on a Jetson cannot use the GPU: say how to get JetPack's build
    assert checks["cuda"].status == "missing" and "JetPack" in checks["cuda"].fix
    assert checks["tensorrt"].status == "missing"

    text = render(list(checks.values()))
    assert "fix: sudo nvpmodel -m 0" in text and text.splitlines()[-1].endswith("warnings")


def test_maxn_jetson_power_mode_is_ok(tmp_path: Path) -> None:
    host = fake_jetson(tmp_path / "root", tmp_path / "bin", "MAXN_SUPER", 6_000_000)
    checks = by_name(run_checks(host))
    assert checks["power mode"].status == "ok" and checks["memory"].status == "ok"


def test_this_machine() -> None:
    checks = by_name(run_checks())
    assert checks["gstreamer"].status == "ok" and checks["gstreamer"].detail.startswith("GStreamer 1.")
    assert checks["gst elements"].status == "ok"  # scripts/system-deps.sh installed them
    assert checks["jetpack"].status == "info" and "power mode" not in checks
    assert checks["gst nvarguscamerasrc"].status == "info"  # absent, and that is fine off-Jetson
    assert checks["memory"].status in ("ok", "warn")


def test_missing_gstreamer_elements_name_the_package(tmp_path: Path) -> None:
    host = Host(root=tmp_path, has_element=lambda n: n not in ("avdec_h264", "h264parse"))
    checks = by_name(run_checks(host))
    assert checks["gst elements (gstreamer1.0-libav)"].fix == "sudo apt-get install gstreamer1.0-libav"
    assert "h264parse" in checks["gst elements (gstreamer1.0-plugins-bad)"].detail
    assert checks["cameras"].status == "warn" and "synth://" in checks["cameras"].fix


@pytest.mark.parametrize("with_model", [True, False])
def test_doctor_cli(tmp_path: Path, tiny_model_dir: Path, with_model: bool) -> None:
    from egovlm.cli import app

    model = tiny_model_dir if with_model else tmp_path / "nothing"
    r = CliRunner().invoke(app, ["doctor", "--json", "--model", str(model)])
    checks = {c["name"]: c for c in json.loads(r.output)}
    assert checks["model"]["status"] == ("ok" if with_model else "missing")
    assert r.exit_code == (0 if with_model else 1)  # exit 1 when something is missing


def _tensorrt_module(version: str) -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    module.__version__ = version  # type: ignore[attr-defined]
    return module


@pytest.fixture
def no_tensorrt_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import tensorrt`` fails, as it does here and on a Jetson venv without system packages."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def test_jetpack_6_0_is_flagged_with_the_upgrade(tmp_path: Path, no_tensorrt_module: None) -> None:
    host = fake_jetson(
        tmp_path / "root",
        tmp_path / "bin",
        "MAXN",
        6_000_000,
        (36, "3.0"),
        {"tensorrt": "8.6.2.3-1+cuda12.2"},
    )
    checks = by_name(run_checks(host))
    jp = checks["jetpack"]
    assert (
        jp.status == "missing"
        and "L4T 36.3.0, JetPack 6.0 (TensorRT 8.6.2, CUDA 12.2, Python 3.10)" in jp.detail
    )
    assert "unsupported" in jp.detail and "flash JetPack 6.1 or newer" in jp.fix
    trt = checks["tensorrt"]
    assert trt.status == "missing" and trt.detail.startswith(
        "TensorRT 8.6.2.3-1+cuda12.2 is older than the supported 10.3"
    )
    assert "flash JetPack 6.1 or newer" in trt.fix
    assert checks["python"].status == "ok"  # 3.10 is JetPack 6's Python; the board is the problem
    assert "fix: flash JetPack 6.1 or newer" in render(list(checks.values()))


def test_a_supported_jetson_with_its_own_python_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _tensorrt_module("10.3.0"))
    monkeypatch.setattr(support, "cuda_device_error", lambda: None)
    host = fake_jetson(tmp_path / "root", tmp_path / "bin", "MAXN", 6_000_000)
    checks = by_name(run_checks(host))
    assert (
        checks["jetpack"].status == "ok"
        and "(TensorRT 10.3, CUDA 12.6, Python 3.10)" in checks["jetpack"].detail
    )
    assert (checks["tensorrt"].status, checks["tensorrt"].detail) == ("ok", "TensorRT 10.3.0 (Python)")
    assert checks["cuda-python"].status == "ok"
    assert checks["python"].status == "ok" and checks["python"].detail.startswith("Python 3.10.12")


def test_python_other_than_jetpacks_and_outside_the_window(tmp_path: Path, no_tensorrt_module: None) -> None:
    host = fake_jetson(tmp_path / "a", tmp_path / "a-bin", "MAXN", 6_000_000, python=(3, 11, 9))
    py = by_name(run_checks(host))["python"]
    assert py.status == "warn" and "JetPack 6.1/6.2's TensorRT bindings are for Python 3.10" in py.detail
    assert "system python3.10 and --system-site-packages" in py.fix
    host = fake_jetson(tmp_path / "b", tmp_path / "b-bin", "MAXN", 6_000_000, (39, "2.0"), python=(3, 12, 3))
    checks = by_name(run_checks(host))
    assert checks["python"].status == "ok" and checks["jetpack"].status == "ok"
    assert "JetPack 7.2 (TensorRT 10.16, CUDA 13.2, Python 3.12)" in checks["jetpack"].detail
    py = by_name(run_checks(Host(root=tmp_path / "c", has_element=lambda n: True, python=(3, 13, 0))))[
        "python"
    ]
    assert py.status == "missing" and "outside the supported 3.10-3.12" in py.fix


def test_tensorrt_installed_but_not_importable_or_too_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tensorrt_module: None
) -> None:
    monkeypatch.setattr(
        support, "cuda_device_error", lambda: "cuda-python is not installed (No module named 'cuda')"
    )
    host = fake_jetson(
        tmp_path / "root", tmp_path / "bin", "MAXN", 6_000_000, dpkg={"libnvinfer10": "10.3.0.30-1+cuda12.5"}
    )
    checks = by_name(run_checks(host))
    trt = checks["tensorrt"]
    assert trt.status == "warn" and "TensorRT 10.3.0.30-1+cuda12.5 installed but not importable" in trt.detail
    assert "--system-site-packages" in trt.fix
    cuda = checks["cuda-python"]
    assert cuda.status == "missing" and "cuda-python>=12.6.1,<13" in cuda.fix
    monkeypatch.setitem(sys.modules, "tensorrt", _tensorrt_module("8.6.2"))
    trt = by_name(run_checks(host))["tensorrt"]
    assert trt.status == "missing" and "JetPack 6.0 ships 8.6" in trt.detail


def test_unknown_l4t_releases_defer_to_the_tensorrt_check(tmp_path: Path, no_tensorrt_module: None) -> None:
    host = fake_jetson(tmp_path / "root", tmp_path / "bin", "MAXN", 6_000_000, (40, "1.0"), python=(3, 12, 3))
    jp = by_name(run_checks(host))["jetpack"]
    assert jp.status == "info" and "L4T 40.1.0" in jp.detail and "does not know" in jp.detail
