"""GStreamer through PyGObject, initialised once.

Imported lazily (inside functions) so ``egovlm --help`` and modules that only render pipeline
strings do not pay for loading GStreamer's plugin registry.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from typing import Any

_lock = threading.Lock()
_modules: tuple[Any, Any, Any] | None = None


class GstUnavailableError(RuntimeError):
    """PyGObject or the GStreamer typelibs are missing; the message says what to install."""


def _pin_gcc_unwinder() -> None:
    """Put libgcc_s's C++ unwinder in the process's global symbol scope before GStreamer loads.

    Debian's libgstreamer-1.0 links libunwind.so.8, which also defines the ``_Unwind_*`` ABI. GModule
    opens it RTLD_GLOBAL, so every C++ library loaded afterwards (libtorch, matplotlib's extensions)
    binds ``_Unwind_RaiseException`` to libunwind's while its personality routines and frame data come
    from GCC: the first C++ exception such a library throws, even one it catches itself, aborts or
    segfaults the process (seen: ``POST /v1/ask`` with ``use_cache: false`` on the torch backend,
    exit 139). Loading libgcc_s globally first makes the dynamic linker resolve those symbols to the
    unwinder the C++ code was built against. No library does this for us; it is the load order the
    fix needs, done once, before the first ``import gi``."""
    name = ctypes.util.find_library("gcc_s") or "libgcc_s.so.1"
    with contextlib.suppress(OSError):  # a libc without libgcc_s (musl) has no mixed unwinders to fear
        ctypes.CDLL(name, mode=os.RTLD_GLOBAL | os.RTLD_NOW)


def _load() -> tuple[Any, Any, Any]:
    global _modules
    with _lock:
        if _modules is None:
            _pin_gcc_unwinder()
            try:
                import gi

                gi.require_version("Gst", "1.0")
                gi.require_version("GstApp", "1.0")
                gi.require_version("GstVideo", "1.0")
                from gi.repository import Gst, GstApp, GstVideo
            except (ImportError, ValueError) as e:
                raise GstUnavailableError(
                    f"GStreamer for Python is not available ({e}); install the Debian packages in "
                    "scripts/system-deps.sh and the `edge` extra (PyGObject), or run `egovlm doctor`"
                ) from e
            Gst.init(None)
            _modules = (Gst, GstApp, GstVideo)
        return _modules


def gst() -> Any:
    """The initialised ``Gst`` module."""
    return _load()[0]


def gst_video() -> Any:
    return _load()[2]
