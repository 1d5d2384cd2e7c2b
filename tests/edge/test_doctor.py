"""``egovlm doctor`` on this machine and on a fake Jetson (a file-system root and commands the
checks read through :class:`Host`)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egovlm.edge.doctor import Check, Host, l4t_release, render, run_checks


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def fake_jetson(root: Path, bin_dir: Path, power_mode: str, mem_available_kb: int) -> Host:
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 2025\n"
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

    def which(name: str) -> str | None:
        path = bin_dir / name
        return str(path) if path.exists() else None

    # GStreamer of a Jetson whose nvidia-l4t-gstreamer lost nvvidconv; everything else present
    return Host(root=root, which=which, has_element=lambda name: name != "nvvidconv")


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
