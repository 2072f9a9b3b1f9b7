"""One Evotic account, wired: API client -> poller -> exposition cache, and its own metrics.

The poller publishes into the cache; a scrape asks ``health()`` and ``exposition()`` for what to
serve, which read the last publication and the time and never wait for the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from exporter.api.client import EvoticClient
from exporter.api.token import TokenSource
from exporter.exposition.own_metrics import AccountMetrics
from exporter.exposition.render import Exposition, ExpositionCache
from exporter.polling.health import Health, assess
from exporter.polling.poller import Poller, PollSettings
from exporter.polling.snapshot import PollState
from exporter.runtime.worker import Offload
from exporter.settings.quotas import Quotas
from exporter.web.app import Status


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

    def health(self) -> Health:
        return assess(self.poller.state, self._clock(), self._stale_after)

    def exposition(self, health: Health) -> Exposition:
        return self.cache.get(health.snapshot)

    def status(self) -> Status:
        health = self.health()
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
