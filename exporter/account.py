"""One Evotic account, wired: API client -> poller -> exposition cache, and its own metrics.

The poller publishes into the cache; a scrape asks ``view()`` for what to serve, which reads
the last publication and the time and never waits for the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from exporter.api.client import EvoticClient
from exporter.api.token import TokenSource
from exporter.exposition import Exposition, ExpositionCache
from exporter.health import Health, assess
from exporter.offload import Offload
from exporter.own_metrics import AccountMetrics
from exporter.poller import Poller, PollSettings
from exporter.quota import Quotas
from exporter.snapshot import PollState


@dataclass(frozen=True)
class Status:
    """What the landing page says of an account: its health, the age of the data it serves,
    why its last poll failed (``None``: it did not), and the rate limit the API last stated
    (``(limit, remaining)``, ``None`` until it has)."""

    health: Health
    age: float | None
    last_error: str | None
    rate: tuple[int, int] | None


@dataclass(frozen=True)
class View:
    """What a scrape serves: the per-server exposition (headers alone when there is nothing to
    trust) and the account's health."""

    exposition: Exposition
    health: Health


class Account:
    """A poller, the cache it publishes into and the metrics both report to; ``offload`` runs
    the cache's rendering (the client is given its own)."""

    def __init__(
        self,
        client: EvoticClient,
        token: TokenSource,
        settings: PollSettings,
        metrics: AccountMetrics,
        *,
        quotas: Quotas | None = None,
        clock: Callable[[], float] = time.time,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        offload: Offload = asyncio.to_thread,
    ) -> None:
        self.metrics = metrics
        self.api_url = client.base_url
        self.cache = ExpositionCache(on_render=lambda seconds: metrics.phase("render", seconds),
                                     offload=offload)  # fmt: skip
        self.poller = Poller(client, token, settings, quotas=quotas, publish=self._publish,
                             observer=metrics, clock=clock, logger=logger)  # fmt: skip
        self._stale_after = settings.stale_after
        self._clock = clock
        self._budget = client.budget
        self._unlisten = client.budget.listen(metrics.rate_limit)

    async def _publish(self, state: PollState) -> None:
        await self.cache.update(state.snapshot)

    def view(self) -> View:
        health = assess(self.poller.state, self._clock(), self._stale_after)
        self.metrics.serving(health)
        return View(self.cache.get(health.snapshot), health)

    def status(self) -> Status:
        health = self.view().health
        snapshot = self.poller.state.snapshot
        outcome = self.poller.state.outcome
        age = None if snapshot is None else max(0.0, self._clock() - snapshot.taken_at)
        limit, remaining = self._budget.limit, self._budget.remaining
        rate = None if limit is None or remaining is None else (limit, remaining)
        return Status(health, age, None if outcome is None else outcome.reason, rate)

    def poll_now(self) -> None:
        self.poller.poll_now()

    def alive(self) -> bool:
        return self.poller.alive()

    def use_quotas(self, quotas: Quotas) -> None:
        self.poller.use_quotas(quotas)

    def start(self) -> None:
        self.poller.start()

    async def stop(self) -> None:
        self._unlisten()
        await self.poller.stop()
