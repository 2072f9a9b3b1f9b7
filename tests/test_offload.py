"""The snapshot worker: every account's validating and rendering on one thread of its own, one
piece at a time; and the parts that hand it that work."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from exporter.api.client import EvoticClient
from exporter.exposition.render import ExpositionCache
from exporter.polling.snapshot import Snapshot
from exporter.runtime.worker import SnapshotWorker

T = TypeVar("T")
BASE = "https://api.test/api/v1"


class Recording:
    """An offload that runs each piece at once, on the event loop's thread, and names it."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def __call__(self, func: Callable[..., T], /, *args: Any) -> T:
        self.names.append(func.__name__)
        return func(*args)


class Blocking:
    """A piece of work that holds the worker until released, and what ran where."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.events: list[str] = []
        self.threads: set[int] = set()

    def hold(self) -> None:
        self.threads.add(threading.get_ident())
        self.events.append("held")
        self.started.set()
        self.release.wait(10)
        self.events.append("released")

    def double(self, value: int) -> int:
        self.threads.add(threading.get_ident())
        self.events.append(f"double {value}")
        return 2 * value


def test_the_worker_runs_one_piece_at_a_time_on_a_thread_of_its_own() -> None:
    work = Blocking()

    async def main() -> int:
        worker = SnapshotWorker()
        held = asyncio.ensure_future(worker(work.hold))
        doubled = asyncio.ensure_future(worker(work.double, 21))
        assert await asyncio.to_thread(work.started.wait, 10)
        # Long enough for the second piece to run, had it a thread to run on.
        await asyncio.sleep(0.05)
        work.release.set()
        await held
        result = await doubled
        worker.close()
        return result

    assert asyncio.run(main()) == 42
    assert work.events == ["held", "released", "double 21"]
    assert len(work.threads) == 1
    assert threading.get_ident() not in work.threads


def test_closing_the_worker_drops_the_work_still_waiting() -> None:
    work = Blocking()

    async def main() -> None:
        worker = SnapshotWorker()
        held = asyncio.ensure_future(worker(work.hold))
        waiting = asyncio.ensure_future(worker(work.double, 1))
        assert await asyncio.to_thread(work.started.wait, 10)
        worker.close()
        work.release.set()
        await held
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    assert work.events == ["held", "released"]


def test_the_cache_renders_and_builds_each_form_through_its_offload(
    sample_snapshot: Snapshot,
) -> None:
    offload = Recording()
    cache = ExpositionCache(offload=offload)

    async def main() -> None:
        await cache.update(sample_snapshot)
        exposition = cache.get(sample_snapshot)
        await exposition.body("openmetrics")
        await exposition.compressed("text")
        await exposition.compressed("text")  # built once per snapshot

    asyncio.run(main())
    assert offload.names == ["Exposition", "openmetrics_from_text", "compress_open"]


def test_the_client_validates_each_page_through_its_offload() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        first = request.url.params.get("cursor") is None
        return httpx.Response(200, json={
            "data": [{"id": 1 if first else 2, "hostname": "h", "status": "started"}],
            "links": {"next": f"{BASE}/servers?cursor=2" if first else None}, "meta": {},
        })  # fmt: skip

    offload = Recording()
    client = EvoticClient(BASE, lambda: "t0ken", timeout=5, user_agent="t",
                          transport=httpx.MockTransport(page), offload=offload)  # fmt: skip
    listing = asyncio.run(client.list_servers())
    assert [server.id for server in listing.servers] == ["1", "2"]
    assert offload.names == ["parse_listing_page", "parse_listing_page"]
