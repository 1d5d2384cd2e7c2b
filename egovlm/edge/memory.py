"""Keep a long-running runtime's memory flat: cap glibc's malloc arenas.

glibc gives each thread that meets a locked arena a new one, up to 8 per core, and rarely returns
their freed pages to the system. The runtime's threads (ingest, the engine's worker, uvicorn's
and anyio's worker pools answering questions) each allocate and free tensors and request bodies,
so the resident size creeps up for hours although nothing leaks (measured with ``egovlm bench
soak``, 4 HTTP clients: about 8 MB per minute with no cap in a short run under load; 0.2 MB per
minute and slowing over 30 minutes with two arenas). Two arenas is the usual setting for threaded
Python servers. This is the one knob here
that no library sets for us; ``MALLOC_ARENA_MAX`` in the environment, when present, wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("egovlm.edge.memory")

M_ARENA_MAX = -8  # glibc's malloc.h
DEFAULT_ARENAS = 2
_applied: int | None = None


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> int | None:
    """Cap glibc's arenas for threads that allocate from now on; returns the cap in force, or None
    on a C library without ``mallopt`` (musl, macOS) or when the environment already sets it."""
    global _applied
    if "MALLOC_ARENA_MAX" in os.environ:
        return int(os.environ["MALLOC_ARENA_MAX"]) if os.environ["MALLOC_ARENA_MAX"].isdigit() else None
    if _applied is not None:
        return _applied
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    if mallopt(M_ARENA_MAX, arenas) != 1:  # mallopt returns 1 on success
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
        return None
    _applied = arenas
    return arenas
