"""GStreamer through PyGObject, initialised once.

Imported lazily (inside functions) so ``egovlm --help`` and modules that only render pipeline
strings do not pay for loading GStreamer's plugin registry.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_modules: tuple[Any, Any, Any] | None = None


class GstUnavailableError(RuntimeError):
    """PyGObject or the GStreamer typelibs are missing; the message says what to install."""


def _load() -> tuple[Any, Any, Any]:
    global _modules
    with _lock:
        if _modules is None:
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


def gst_app() -> Any:
    return _load()[1]


def gst_video() -> Any:
    return _load()[2]
