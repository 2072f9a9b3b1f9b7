"""glibc's allocator, tuned for a process that builds and drops multi-megabyte bodies."""

from __future__ import annotations

import ctypes
import sys

# mallopt(3) parameter numbers in glibc's malloc.h.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> None:
    """Have glibc hand large freed blocks back to the system at once, every time.

    glibc serves blocks above its mmap threshold (128 KiB) with mmap and unmaps them when
    freed, but it raises the threshold to the size of each such block freed, up to 32 MiB.
    From the second poll on, the multi-megabyte bodies and pages of every poll then come
    from the heap, which keeps them after use: tens of megabytes at 10,000 servers (see
    benchmarks/README.md). Setting the threshold turns that adjustment off. Two arenas
    instead of eight per core: the worker threads that validate and render take turns
    holding the GIL anyway, and each arena of their own kept its own free memory. Other C
    libraries have no mallopt, and nothing changes there.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    mallopt(_M_ARENA_MAX, 2)
