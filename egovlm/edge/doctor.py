"""``egovlm doctor``: what this machine has for the edge runtime, what is missing, and the fix.

Users' recurring pains on Jetson (docs/architecture.md#on-the-device) are environmental: CSI vs V4L2
confusion, a PyPI torch without CUDA, TensorRT/JetPack mismatches, a power mode that makes published
speeds irreproducible, out-of-memory on 8 GB boards. Each check reports a status and, when something
is wrong, the command or step that fixes it.

Everything the checks read goes through :class:`Host` (file-system root, ``which``, command
runner), so tests can present a fake Jetson.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from egovlm import trt_support
from egovlm.trt_support import L4T_RELEASES

Status = Literal["ok", "warn", "missing", "info"]

# element -> Debian package (x86/arm64 Debian/Ubuntu) that provides it
GST_ELEMENTS: dict[str, str] = {
    "appsrc": "gstreamer1.0-plugins-base",
    "appsink": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "videoscale": "gstreamer1.0-plugins-base",
    "videorate": "gstreamer1.0-plugins-base",
    "decodebin": "gstreamer1.0-plugins-base",
    "videotestsrc": "gstreamer1.0-plugins-base",
    "v4l2src": "gstreamer1.0-plugins-good",
    "rtspsrc": "gstreamer1.0-plugins-good",
    "jpegdec": "gstreamer1.0-plugins-good",
    "qtdemux": "gstreamer1.0-plugins-good",
    "matroskademux": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
    "avdec_h264": "gstreamer1.0-libav",
}
JETSON_ELEMENTS: dict[str, str] = {
    "nvarguscamerasrc": "CSI cameras (csi://N)",
    "nvv4l2decoder": "hardware H.264/H.265 decode",
    "nvvidconv": "hardware colour conversion and scaling",
}
# L4T release -> JetPack (the L4T numbers a JetPack image reports in /etc/nv_tegra_release); the
# TensorRT, CUDA and Python each ships are in egovlm.trt_support.L4T_RELEASES.
L4T_TO_JETPACK: dict[str, str] = {l4t: jp.jetpack for l4t, jp in L4T_RELEASES.items()}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Host:
    """Where the checks look. Defaults are the real machine."""

    root: Path = Path("/")
    which: Callable[[str], str | None] = shutil.which
    has_element: Callable[[str], bool] | None = None  # None: ask GStreamer
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    python: tuple[int, int, int] = field(
        default_factory=lambda: (sys.version_info.major, sys.version_info.minor, sys.version_info.micro)
    )

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def read(self, p: str) -> str | None:
        try:
            return self.path(p).read_text(errors="replace")
        except OSError:
            return None

    def run(self, argv: Sequence[str], timeout: float = 5.0) -> str | None:
        """stdout of a command found on PATH, or None when absent or failing."""
        exe = self.which(argv[0])
        if exe is None:
            return None
        try:
            out = subprocess.run(
                [exe, *argv[1:]], capture_output=True, text=True, timeout=timeout, env=self.env
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None


def l4t_release(host: Host) -> str | None:
    """``36.4.0`` from ``# R36 (release), REVISION: 4.0, ...`` in /etc/nv_tegra_release."""
    text = host.read("/etc/nv_tegra_release")
    if not text:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def is_jetson(host: Host) -> bool:
    return l4t_release(host) is not None or host.path("/etc/nv_tegra_release").exists()


def jetpack_of(host: Host) -> trt_support.JetPack | None:
    """What this Jetson's L4T release ships (None off Jetson or for an L4T the table does not know)."""
    release = l4t_release(host)
    return L4T_RELEASES.get(".".join(release.split(".")[:2])) if release else None


def check_python(host: Host) -> list[Check]:
    """This Python against the device window (3.10-3.12) and, on Jetson, against the Python JetPack's
    TensorRT bindings are built for (python3-libnvinfer exists for the system python3 only)."""
    major, minor, micro = host.python
    detail = f"Python {major}.{minor}.{micro} on {platform.machine()} ({sys.platform})"
    problem = trt_support.python_problem((major, minor))
    if problem is not None:
        return [Check("python", "missing", detail + " (unsupported)", problem)]
    jetpack = jetpack_of(host)
    if jetpack is not None and jetpack.supported and jetpack.python != f"{major}.{minor}":
        return [
            Check(
                "python",
                "warn",
                f"{detail}; JetPack {jetpack.jetpack}'s TensorRT bindings are for Python {jetpack.python}",
                f"create the venv with the system python{jetpack.python} and --system-site-packages "
                "(the tensorrt backend needs JetPack's bindings; the onnx backend works either way)",
            )
        ]
    return [Check("python", "ok", detail)]


def check_gstreamer(host: Host) -> list[Check]:
    """PyGObject + GStreamer, then each element the sources use."""
    has = host.has_element
    if has is None:
        try:
            from egovlm.edge.gst import gst

            g = gst()
            version = g.version_string()

            def has_real(name: str) -> bool:
                return g.ElementFactory.find(name) is not None

            has = has_real
        except Exception as e:
            return [
                Check(
                    "gstreamer",
                    "missing",
                    f"GStreamer for Python not importable: {e}",
                    "sudo bash scripts/system-deps.sh && pip install -c constraints.txt 'pygobject<3.51'",
                )
            ]
        checks = [Check("gstreamer", "ok", version)]
    else:
        checks = [Check("gstreamer", "info", "element lookup supplied by the caller")]
    missing: dict[str, list[str]] = {}
    for element, package in GST_ELEMENTS.items():
        if not has(element):
            missing.setdefault(package, []).append(element)
    if missing:
        for package, elements in sorted(missing.items()):
            checks.append(
                Check(
                    f"gst elements ({package})",
                    "missing",
                    f"not found: {', '.join(elements)}",
                    f"sudo apt-get install {package}",
                )
            )
    else:
        checks.append(Check("gst elements", "ok", f"all {len(GST_ELEMENTS)} elements the sources use"))
    jetson = is_jetson(host)
    for element, purpose in JETSON_ELEMENTS.items():
        if has(element):
            checks.append(Check(f"gst {element}", "ok", purpose))
        elif jetson:
            checks.append(
                Check(
                    f"gst {element}",
                    "missing",
                    f"{purpose} unavailable",
                    "sudo apt-get install nvidia-l4t-gstreamer (part of JetPack), "
                    "then rm -rf ~/.cache/gstreamer-1.0",
                )
            )
        else:
            checks.append(Check(f"gst {element}", "info", f"absent (Jetson only: {purpose})"))
    return checks


def check_cameras(host: Host) -> list[Check]:
    devices = sorted(host.path("/dev").glob("video*"), key=lambda p: (len(p.name), p.name))
    checks: list[Check] = []
    for dev in devices:
        name = (host.read(f"/sys/class/video4linux/{dev.name}/name") or "").strip() or "unknown"
        uri = f"v4l2:///dev/{dev.name}"
        if os.access(dev, os.R_OK | os.W_OK):
            checks.append(Check(f"camera /dev/{dev.name}", "ok", f"{name} → --source {uri}"))
        else:
            checks.append(
                Check(
                    f"camera /dev/{dev.name}",
                    "warn",
                    f"{name}: no read/write permission",
                    "sudo usermod -aG video $USER (then log in again)",
                )
            )
    if is_jetson(host):
        checks.append(
            Check(
                "csi cameras",
                "info",
                "CSI cameras are not /dev/video* for capture: use --source csi://0 (nvarguscamerasrc); "
                "USB cameras use v4l2:///dev/videoN",
            )
        )
    if not devices:
        checks.append(
            Check(
                "cameras",
                "warn",
                "no /dev/video* devices",
                "plug in a UVC camera, or use --source synth:// (synthetic) or file:///path/clip.mp4",
            )
        )
    return checks


def check_cuda(host: Host) -> list[Check]:
    smi = host.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    checks = [Check("nvidia-smi", "ok", smi.strip().replace("\n", "; "))] if smi else []
    try:
        torch = importlib.import_module("torch")
    except ImportError:  # the device install has no torch: the onnx and tensorrt backends do not need it
        return [
            *checks,
            Check(
                "torch",
                "info",
                "torch not installed: fine for --backend onnx | tensorrt (the device install); "
                "--backend torch needs pip install -e '.[workstation]' -c constraints.txt",
            ),
        ]
    cuda_build = getattr(torch.version, "cuda", None)
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return [*checks, Check("cuda", "ok", f"torch {torch.__version__} (CUDA {cuda_build}) sees {name}")]
    if is_jetson(host):
        fix = (
            "install NVIDIA's PyTorch wheel for your JetPack (the PyPI wheel has no Jetson CUDA), "
            "or run --backend onnx | tensorrt, which need no torch (egovlm/edge/docker/README.md)"
        )
        return [*checks, Check("cuda", "missing", f"torch {torch.__version__} cannot use the GPU", fix)]
    return [
        *checks,
        Check("cuda", "info", f"no CUDA GPU; torch {torch.__version__} runs on CPU (fine for tests)"),
    ]


def check_tensorrt(host: Host) -> list[Check]:
    """TensorRT as this Python imports it, checked against the support window (10.3+), else what
    dpkg says is installed; then CUDA as the tensorrt backend reaches it (cuda-python)."""
    return [_tensorrt_check(host), _cuda_python_check(host)]


def _tensorrt_check(host: Host) -> Check:
    try:
        trt = trt_support.import_tensorrt()
    except trt_support.TensorRTUnsupportedError as e:
        return Check("tensorrt", "missing", str(e).split(";")[0] + " (unsupported)", trt_support.UPGRADE)
    except trt_support.TensorRTUnavailableError:
        return _tensorrt_from_dpkg(host)
    version = str(trt.__version__)
    if trt_support.newer_than_checked(version):
        newest = ".".join(map(str, trt_support.NEWEST_CHECKED))
        return Check(
            "tensorrt", "ok", f"TensorRT {version} (Python); newer than {newest}, the newest release checked"
        )
    return Check("tensorrt", "ok", f"TensorRT {version} (Python)")


def _tensorrt_from_dpkg(host: Host) -> Check:
    installed = None
    for package in ("tensorrt", "libnvinfer10", "libnvinfer8"):
        out = host.run(["dpkg-query", "-W", "-f=${Version}", package])
        if out and out.strip():
            installed = out.strip()
            break
    if installed:
        problem = trt_support.support_problem(installed)
        if problem is not None:
            return Check("tensorrt", "missing", problem.split(";")[0] + " (unsupported)", trt_support.UPGRADE)
        return Check(
            "tensorrt",
            "warn",
            f"TensorRT {installed} installed but not importable from this Python",
            "use the system python3-libnvinfer bindings: create the venv with the system python3 and "
            "--system-site-packages",
        )
    if is_jetson(host):
        return Check(
            "tensorrt", "missing", "TensorRT not found", "sudo apt-get install nvidia-jetpack (or tensorrt)"
        )
    return Check(
        "tensorrt",
        "info",
        "absent: the tensorrt backend runs on Jetson/NVIDIA GPUs; torch and onnx work here",
    )


def _cuda_python_check(host: Host) -> Check:
    problem = trt_support.cuda_device_error()
    if problem is None:
        return Check(
            "cuda-python", "ok", "CUDA usable through cuda-python (the tensorrt backend's device memory)"
        )
    if is_jetson(host):
        return Check("cuda-python", "missing", problem, trt_support.CUDA_PYTHON_HINT)
    return Check("cuda-python", "info", f"{problem} (needed only by the tensorrt backend, on a GPU)")


def check_jetpack(host: Host) -> list[Check]:
    """L4T release, the JetPack it is (dpkg's nvidia-jetpack when installed), what it ships, and
    whether that is inside the support window (JetPack 6.0 and older are not: TensorRT 8.x)."""
    release = l4t_release(host)
    if release is None:
        return [Check("jetpack", "info", "not a Jetson (no /etc/nv_tegra_release)")]
    model = (host.read("/proc/device-tree/model") or "Jetson").strip("\x00\n ")
    shipped = jetpack_of(host)
    jetpack = shipped.jetpack if shipped else None
    dpkg = host.run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    if dpkg and dpkg.strip():
        jetpack = dpkg.strip()
    detail = f"{model}: L4T {release}" + (f", JetPack {jetpack}" if jetpack else "")
    if shipped is None:
        return [
            Check(
                "jetpack",
                "info",
                detail + ": an L4T release this version of egovlm does not know; the TensorRT and "
                "Python checks decide",
            )
        ]
    detail += f" (TensorRT {shipped.tensorrt}, CUDA {shipped.cuda}, Python {shipped.python})"
    if not shipped.supported:
        return [
            Check(
                "jetpack", "missing", detail + ": unsupported, TensorRT older than 10.3", trt_support.UPGRADE
            )
        ]
    return [Check("jetpack", "ok", detail)]


def check_power(host: Host) -> list[Check]:
    if not is_jetson(host):
        return []
    out = host.run(["nvpmodel", "-q"])
    if out is None:
        return [Check("power mode", "warn", "nvpmodel not available (run as root?)", "sudo nvpmodel -q")]
    m = re.search(r"Power Mode:\s*(\S+)", out)
    mode = m.group(1) if m else out.strip().splitlines()[0] if out.strip() else "unknown"
    if "MAXN" in mode.upper():
        return [
            Check("power mode", "ok", f"{mode}", "for benchmarks also lock clocks: sudo jetson_clocks"),
        ]
    return [
        Check(
            "power mode",
            "warn",
            f"{mode}: latency will not match published MAXN numbers",
            "sudo nvpmodel -m 0 && sudo jetson_clocks (mode numbers differ per board: nvpmodel -p --verbose)",
        )
    ]


def _meminfo(host: Host) -> dict[str, int]:
    text = host.read("/proc/meminfo") or ""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * 1024
    return out


def check_memory(host: Host) -> list[Check]:
    info = _meminfo(host)
    if "MemAvailable" not in info:
        return [Check("memory", "info", "unknown (no /proc/meminfo)")]
    gb = 1024**3
    total, avail, swap = (
        info.get("MemTotal", 0) / gb,
        info["MemAvailable"] / gb,
        info.get("SwapTotal", 0) / gb,
    )
    detail = f"{avail:.1f} GB available of {total:.1f} GB, swap {swap:.1f} GB"
    if avail < 2.0:
        fix = (
            "close other programs (on Jetson: sudo systemctl isolate multi-user.target frees the "
            "desktop's ~1 GB)"
        )
        if swap < 1.0:
            fix += "; add swap or zram"
        return [Check("memory", "warn", detail + ": a 3B model needs ~2 GB at INT4, ~7 GB at FP16", fix)]
    return [Check("memory", "ok", detail)]


def check_python_packages(host: Host) -> list[Check]:
    missing = [
        m for m in ("fastapi", "uvicorn", "prometheus_client", "httpx") if importlib.util.find_spec(m) is None
    ]
    if missing:
        return [
            Check(
                "python packages",
                "missing",
                f"not installed: {missing}",
                "pip install -c constraints.txt -e '.[device]'",
            )
        ]
    checks = [Check("python packages", "ok", "fastapi, uvicorn, prometheus_client, httpx")]
    try:
        ort = importlib.import_module("onnxruntime")
        checks.append(
            Check("onnxruntime", "ok", f"{ort.__version__}: {', '.join(ort.get_available_providers())}")
        )
    except ImportError:
        checks.append(
            Check("onnxruntime", "info", "absent (needed for --backend onnx)", "pip install -e '.[device]'")
        )
    return checks


def check_model(path: Path) -> list[Check]:
    from egovlm.models.files import ModelLoadError, check_model_dir

    try:
        check_model_dir(path)
    except ModelLoadError as e:
        return [
            Check(
                "model",
                "missing",
                str(e),
                "egovlm model tiny --out DIR (offline test model), or point --model at a checkpoint",
            )
        ]
    size = sum(p.stat().st_size for p in path.glob("*.safetensors")) / 1024**2
    return [Check("model", "ok", f"{path}: {size:.0f} MB of safetensors weights")]


CHECKS = (
    check_python,
    check_gstreamer,
    check_cameras,
    check_cuda,
    check_tensorrt,
    check_jetpack,
    check_power,
    check_memory,
    check_python_packages,
)


def run_checks(host: Host | None = None, model: Path | None = None) -> list[Check]:
    host = host or Host()
    checks: list[Check] = []
    for fn in CHECKS:
        try:
            checks += fn(host)
        except Exception as e:  # a broken probe must not hide the other results
            checks.append(
                Check(fn.__name__.removeprefix("check_"), "warn", f"check failed: {type(e).__name__}: {e}")
            )
    if model is not None:
        checks += check_model(model)
    return checks


def render(checks: Sequence[Check]) -> str:
    marks = {"ok": "ok  ", "warn": "WARN", "missing": "MISS", "info": "    "}
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"[{marks[c.status]}] {c.name:<{width}}  {c.detail}")
        if c.fix and c.status in ("warn", "missing"):
            lines.append(f"       {'':<{width}}  fix: {c.fix}")
    n_bad = sum(c.status == "missing" for c in checks)
    n_warn = sum(c.status == "warn" for c in checks)
    lines.append(f"{n_bad} missing, {n_warn} warnings")
    return "\n".join(lines)


def as_json(checks: Sequence[Check]) -> list[dict[str, Any]]:
    return [asdict(c) for c in checks]
