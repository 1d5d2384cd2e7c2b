"""The TensorRT support window, and what this machine has for it (TensorRT, CUDA via cuda-python).

Supported: **TensorRT 10.3 and newer** (10.x, and 11.x where NVIDIA ships it), on **CPython 3.10-3.12**:

* JetPack 6.1 / 6.2 (L4T 36.4): TensorRT 10.3, CUDA 12.6, Python 3.10 (Orin);
* JetPack 7.0 / 7.1 (L4T 38.x): TensorRT 10.13, CUDA 13.0, Python 3.12 (Thor);
* JetPack 7.2 (L4T 39.2): TensorRT 10.16, CUDA 13.2, Python 3.12 (Orin and Thor);
* desktop / server GPUs: any TensorRT from 10.3 on (TensorRT 11 is not shipped for JetPack as of 11.3).

Refused: TensorRT 8.6 (JetPack 6.0, L4T 36.3) and older. The export builds STRONGLY TYPED networks
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: TensorRT 8.6's bindings lack it, so on 8.6 the
build would fail with a bare AttributeError deep inside it), and engines built by
one TensorRT version do not load in another anyway. :func:`import_tensorrt` is the only way the code
imports ``tensorrt``: it refuses an older release at import with the JetPack upgrade that fixes it.

Streaming (no second copy of an engine plan in host memory; on Jetson host and GPU share the RAM):

* building: ``IBuilder.build_serialized_network_to_stream`` + ``IStreamWriter`` exist from
  TensorRT 10.13 (checked in the bindings' string tables: absent in 10.3 ... 10.12, present in
  10.13.0, 10.13.3, 10.16 and 11.4); older releases return the whole plan as ``IHostMemory``, which
  is written through a memoryview (no Python ``bytes`` copy);
* loading: ``deserialize_cuda_engine(IStreamReaderV2)`` exists from TensorRT 10.7, but the Python
  stream readers took more peak memory than a plain buffer until 10.9 (NVIDIA/TensorRT issue 4327,
  fixed in 10.9.0), so readers are used from 10.9; before that the plan is ``mmap``-ed (file-backed
  pages the kernel can drop, not a second anonymous copy). TensorRT 11 removed the old
  ``IStreamReader``; the code never uses it.

The facts above are tested without a GPU against the real bindings of each release
(tests/export/test_trt_api_surface.py, wheels fetched by scripts/fetch-trt-bindings.sh).
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from typing import Any

MIN_TENSORRT = (10, 3)
STREAM_BUILD_SINCE = (10, 13)  # IBuilder.build_serialized_network_to_stream / IStreamWriter
STREAM_LOAD_SINCE = (10, 9)  # IStreamReaderV2 (10.7) without the Python reader's memory bug (fixed 10.9)
NEWEST_CHECKED = (11, 4)  # the newest release whose bindings the API-surface test reads
PYTHON_WINDOW = ((3, 10), (3, 12))  # JetPack 6 ships 3.10, JetPack 7 ships 3.12


@dataclass(frozen=True)
class JetPack:
    """One JetPack release line as an L4T major.minor reports it in /etc/nv_tegra_release."""

    jetpack: str
    tensorrt: str
    cuda: str
    python: str

    @property
    def supported(self) -> bool:
        return parse_version(self.tensorrt) >= MIN_TENSORRT


# L4T major.minor -> JetPack and what it ships (NVIDIA's JetPack release notes; Torch-TensorRT's
# JetPack page for 6.1/6.2; the L4T 38/39 stacks as shipped on Thor/Orin devices).
L4T_RELEASES: dict[str, JetPack] = {
    "35.3": JetPack("5.1.1", "8.5.2", "11.4", "3.8"),
    "35.4": JetPack("5.1.2", "8.5.2", "11.4", "3.8"),
    "35.5": JetPack("5.1.3", "8.5.2", "11.4", "3.8"),
    "35.6": JetPack("5.1.4", "8.5.2", "11.4", "3.8"),
    "36.2": JetPack("6.0 DP", "8.6.2", "12.2", "3.10"),
    "36.3": JetPack("6.0", "8.6.2", "12.2", "3.10"),
    "36.4": JetPack("6.1/6.2", "10.3", "12.6", "3.10"),
    "38.2": JetPack("7.0", "10.13", "13.0", "3.12"),
    "38.4": JetPack("7.1", "10.13", "13.0", "3.12"),
    "39.2": JetPack("7.2", "10.16", "13.2", "3.12"),
}
UPGRADE = (
    "flash JetPack 6.1 or newer (6.2 for Orin Nano/NX 'Super' modes; JetPack 7.2 for Orin and Thor), "
    "which ships TensorRT 10.3+; on a desktop GPU install TensorRT 10.3 or newer"
)


class TensorRTUnavailableError(ImportError):
    """``tensorrt`` cannot be used here: not installed, a broken install, or outside the window."""


class TensorRTUnsupportedError(TensorRTUnavailableError):
    """``tensorrt`` imports, but its version is outside the support window."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0, 30)``; suffixes after the numbers (``.post1``, ``+cuda12``,
    ``rc1``) are ignored. Raises ValueError naming the text when it starts with no number."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", str(text))
    if m is None:
        raise ValueError(f"not a version number: {text!r}")
    return tuple(int(p) for p in m.group(1).split("."))


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def support_problem(version: str) -> str | None:
    """Why TensorRT ``version`` cannot be used (with the fix), or None when it is in the window."""
    try:
        parsed = parse_version(version)
    except ValueError:
        return f"TensorRT reports version {version!r}, which is not a version number; reinstall TensorRT"
    if parsed[:2] < MIN_TENSORRT:
        jetpack = " (JetPack 6.0 ships 8.6)" if parsed[:2] == (8, 6) else ""
        return (
            f"TensorRT {version} is older than the supported {_dotted(MIN_TENSORRT)}{jetpack}: the "
            f"engines are strongly typed networks, which it cannot build or run; {UPGRADE}"
        )
    return None


def newer_than_checked(version: str) -> bool:
    """True for a release newer than the newest whose API the tests checked (allowed, but unproven)."""
    try:
        return parse_version(version)[:2] > NEWEST_CHECKED
    except ValueError:
        return False


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, checked against the support window. Raises
    :class:`TensorRTUnsupportedError` for an older release and :class:`TensorRTUnavailableError` when it does
    not import (the PyPI ``tensorrt`` package without NVIDIA's libraries raises on import)."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as e:  # ImportError, or the stub package's own errors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TensorRTUnavailableError(
            f"the tensorrt Python module is not importable ({type(e).__name__}: {first}); on Jetson it "
            "comes with JetPack (python3-libnvinfer: create the venv with --system-site-packages), "
            f"elsewhere install TensorRT {_dotted(MIN_TENSORRT)} or newer for your CUDA"
        ) from e
    version = str(getattr(trt, "__version__", "unknown"))
    problem = support_problem(version)
    if problem is not None:
        raise TensorRTUnsupportedError(problem)
    return trt


def tensorrt_version(trt: Any) -> tuple[int, ...]:
    return parse_version(str(getattr(trt, "__version__", "0")))


def streams_build(trt: Any) -> bool:
    """Whether this TensorRT writes plans through an ``IStreamWriter`` (see the module docstring)."""
    return tensorrt_version(trt)[:2] >= STREAM_BUILD_SINCE


def streams_load(trt: Any) -> bool:
    """Whether this TensorRT reads plans through an ``IStreamReaderV2`` (see the module docstring)."""
    return tensorrt_version(trt)[:2] >= STREAM_LOAD_SINCE


# -- CUDA through NVIDIA's cuda-python (the device install has no torch) ------------------------------

CUDA_PYTHON_HINT = (
    "install NVIDIA's cuda-python for your CUDA major: JetPack 6 (CUDA 12.6) `pip install "
    "'cuda-python>=12.6.1,<13'`, JetPack 7 (CUDA 13) `pip install 'cuda-python>=13,<14'`"
)


def cuda_runtime() -> Any:
    """``cuda.bindings.runtime`` (cuda-python >= 12.6.1; 13.x removed the old ``cuda.cudart`` name)."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError as e:
        raise TensorRTUnavailableError(f"cuda-python is not installed ({e}); {CUDA_PYTHON_HINT}") from e


def cuda_device_error() -> str | None:
    """What stops CUDA from running here (no cuda-python, no driver, no device), or None."""
    try:
        rt = cuda_runtime()
    except TensorRTUnavailableError as e:
        return str(e)
    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0:
        _, text = rt.cudaGetErrorString(err)
        return f"CUDA reports {getattr(err, 'name', err)}: {bytes(text).decode(errors='replace')}"
    if count < 1:
        return "CUDA sees no GPU"
    return None


def python_problem(version: tuple[int, int] | None = None) -> str | None:
    """Why this Python is outside the device window (with the fix), or None."""
    major_minor = version or (sys.version_info.major, sys.version_info.minor)
    low, high = PYTHON_WINDOW
    if low <= major_minor <= high:
        return None
    return (
        f"Python {major_minor[0]}.{major_minor[1]} is outside the supported {low[0]}.{low[1]}-"
        f"{high[0]}.{high[1]}; use the system python3 of JetPack 6 (3.10) or JetPack 7 (3.12), whose "
        "TensorRT bindings match it"
    )
