"""Where the CPU work of a snapshot runs: validating listing pages, rendering, compressing.

``SnapshotWorker`` is one thread that does it for every account, one piece at a time. Python
runs one thread at a time anyway, so more threads would not finish the work sooner; they would
only hold several polls' pages, records and bodies in memory at once, and take the interpreter
from the event loop more often. With ten accounts of 1,000 servers polling together, the
thread pool asyncio gives ``to_thread`` (six threads on two cores) peaked 24 MB higher than
one thread (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Offload(Protocol):
    """Runs ``func(*args)`` away from the event loop; ``asyncio.to_thread`` is one."""

    def __call__(self, func: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


class SnapshotWorker:
    """One thread for every account's snapshot work, as an ``Offload``; ``close`` ends it."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-worker")

    def __call__(self, func: Callable[..., T], /, *args: Any) -> Awaitable[T]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, functools.partial(func, *args))

    def close(self) -> None:
        """Take no more work and drop what waits; a piece already running ends on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
