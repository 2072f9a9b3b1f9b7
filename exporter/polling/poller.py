"""The background loop of one account: fetch -> validate -> publish a snapshot and an outcome.

A poller only polls. Each cycle it fetches every page of the listing, validates it, builds one
immutable ``Snapshot`` and hands it, with the ``Outcome`` of the poll, to its ``publish``
callback (the account's exposition cache renders it there). It never renders and never reads
rendered output: what it needs of the past (the last good record of a server whose record
turns bad, the statuses of the last sweep) it keeps as snapshots and mappings of its own.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Protocol

import structlog

from exporter.api.client import EvoticClient, Listing
from exporter.api.errors import EvoticError
from exporter.api.models import Server, ServerStatus
from exporter.api.token import TokenSource
from exporter.polling.snapshot import Outcome, PollState, Snapshot
from exporter.settings.model import Settings
from exporter.settings.quotas import Quotas, billing_period

Publish = Callable[[PollState], Awaitable[None]]


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class PollSettings:
    """The poller's share of ``Settings``; every default is the setting's own.

    ``deadline`` bounds a whole poll, retries included.
    """

    interval: float = _default("poll_interval")
    stale_after: float = _default("stale_after")
    collect_status: bool = _default("collect_status")
    status_concurrency: int = _default("status_concurrency")
    status_interval: float = _default("status_interval")
    period_start_day: int = _default("traffic_period_start_day")

    @property
    def deadline(self) -> float:
        return max(0.5, 0.9 * self.interval)

    @property
    def backoff_cap(self) -> float:
        return max(self.interval, min(10 * self.interval, 300.0))

    @property
    def startup_jitter(self) -> float:
        return min(0.1 * self.interval, 5.0)

    @classmethod
    def from_settings(cls, settings: Settings) -> PollSettings:
        return cls(
            interval=settings.poll_interval,
            stale_after=settings.stale_after,
            collect_status=settings.collect_status,
            status_concurrency=settings.status_concurrency,
            status_interval=settings.status_interval,
            period_start_day=settings.traffic_period_start_day,
        )


class PollObserver(Protocol):
    """Told what a poll and a sweep did: the account's own metrics."""

    def poll_finished(self, outcome: Outcome, snapshot: Snapshot | None) -> None: ...

    def phase(self, phase: str, seconds: float) -> None: ...


class _Unobserved:
    def poll_finished(self, outcome: Outcome, snapshot: Snapshot | None) -> None:
        return None

    def phase(self, phase: str, seconds: float) -> None:
        return None


async def _discard(state: PollState) -> None:
    return None


class Poller:
    """Polls one account forever and publishes what it learns; ``state`` is the last publication."""

    def __init__(
        self,
        client: EvoticClient,
        token: TokenSource,
        settings: PollSettings,
        *,
        quotas: Quotas | None = None,
        publish: Publish = _discard,
        observer: PollObserver | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._client = client
        self._token = token
        self._settings = settings
        self._quotas = quotas if quotas is not None else Quotas({})
        self._publish = publish
        self._observer = observer or _Unobserved()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._log = logger or structlog.get_logger("exporter.polling.poller")
        self.state = PollState()
        self._statuses: Mapping[str, ServerStatus] = MappingProxyType({})
        self._failures = 0
        self._failing_since: float | None = None
        self._set_aside: tuple[int, frozenset[str | None]] = (0, frozenset())
        self._publishing = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()

    def use_quotas(self, quotas: Quotas) -> None:
        """Quotas for the polls from the next one on (a reload read the quota file again)."""
        self._quotas = quotas

    # ------------------------------------------------------------------ loops

    def alive(self) -> bool:
        """True while the poll loop (and the status loop, if any) is running."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="poll-loop"))
        if self._settings.collect_status:
            self._tasks.append(asyncio.create_task(self._status_loop(), name="status-loop"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    def poll_now(self) -> None:
        """Poll at once rather than at the next interval, and start the back-off afresh: after
        a fixed token file, nobody should wait out five minutes of back-off. A 429's
        ``Retry-After`` is still honoured."""
        self._failures = 0
        self._wake.set()

    async def _poll_loop(self) -> None:
        await self._rest(self._rng.uniform(0.0, self._settings.startup_jitter))
        while True:
            started = time.monotonic()
            await self.poll_once()
            delay = self._next_delay() - (time.monotonic() - started)
            await self._rest(max(delay, self._client.held_for, 0.0))

    async def _rest(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when ``poll_now`` is called meanwhile."""
        if not self._wake.is_set():
            sleeping = asyncio.ensure_future(self._sleep(seconds))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
                if sleeping.done():
                    sleeping.result()  # what the sleep raised, it raises here
            finally:
                sleeping.cancel()
                woken.cancel()
        if self._wake.is_set():
            self._wake.clear()
            if self._client.held_for > 0:
                await self._sleep(self._client.held_for)

    def _next_delay(self) -> float:
        interval = self._settings.interval
        if self._failures <= 1:
            return interval
        return min(interval * 2.0 ** (self._failures - 1), self._settings.backoff_cap)

    # ------------------------------------------------------------------ one poll

    async def poll_once(self) -> bool:
        """One poll; True when it succeeded. Never raises (but for cancellation)."""
        started = time.perf_counter()
        deadline = self._settings.deadline
        try:
            async with asyncio.timeout(deadline):
                self._token.refresh()
                with self._client.deadline(deadline):
                    listing = await self._client.list_servers()
        except TimeoutError:
            message = f"poll exceeded its deadline of {deadline} s"
            await self._failed("timeout", message, started)
            return False
        except EvoticError as error:
            await self._failed(error.reason, str(error), started)
            return False
        except Exception as error:  # a bug must not end the loop; say so loudly, once
            if self._last_reason() != "internal":
                self._log.exception("poll failed unexpectedly", error_type=type(error).__name__)
            await self._failed("internal", type(error).__name__, started)
            return False
        await self._succeeded(listing, started)
        return True

    def _last_reason(self) -> str | None:
        outcome = self.state.outcome
        return None if outcome is None else outcome.reason

    def _snapshot(self, listing: Listing, now: float, previous: Snapshot | None) -> Snapshot:
        """The listed servers, plus the last good record of each server set aside this time.

        A server whose record turns invalid keeps its last valid data instead of vanishing as
        if deleted; a server never seen valid is not exported until it is.
        """
        servers = listing.servers
        kept: tuple[Server, ...] = ()
        if listing.rejected and previous is not None:
            listed = {server.id for server in servers}
            wanted = {r.server_id for r in listing.rejected if r.server_id} - listed
            kept = tuple(server for server in previous.servers if server.id in wanted)
        servers += kept
        return Snapshot(
            servers=servers,
            taken_at=now,
            statuses=_only(servers, self._statuses),
            quotas=self._quotas,
            period=billing_period(now, self._settings.period_start_day),
            rejected=len(listing.rejected),
            kept=len(kept),
        )

    async def _succeeded(self, listing: Listing, started: float) -> None:
        now = self._clock()
        phases = (("fetch", listing.fetch_seconds), ("validate", listing.validate_seconds))
        outcome = Outcome(now, time.perf_counter() - started, phases=phases)
        first = self.state.snapshot is None
        last_success = self.state.last_success
        snapshot = self._snapshot(listing, now, self.state.snapshot)
        await self._set(lambda last: PollState(snapshot, outcome))
        self._observer.poll_finished(outcome, snapshot)
        self._log_set_aside(listing)
        if self._failing_since is not None:
            # The outage began when data stopped coming: at the last success, if there was one.
            began = self._failing_since if last_success is None else last_success
            self._log.info(
                "poll recovered", outage_seconds=round(now - began, 1), servers=snapshot.listed,
            )  # fmt: skip
        elif first:
            self._log.info("first poll succeeded", servers=snapshot.listed,
                           seconds=round(outcome.duration, 3))  # fmt: skip
        self._failures = 0
        self._failing_since = None

    def _log_set_aside(self, listing: Listing) -> None:
        """Log the records set aside when the set of them changes, and once when it empties."""
        ids = frozenset(rejected.server_id for rejected in listing.rejected)
        set_aside = (len(listing.rejected), ids)
        if set_aside == self._set_aside:
            return
        if listing.rejected:
            sample = listing.rejected[0]
            self._log.warning(
                "servers set aside", count=len(listing.rejected),
                example_id=sample.server_id, example_error="; ".join(sample.errors),
            )  # fmt: skip
        else:
            self._log.info("no servers set aside any more")
        self._set_aside = set_aside

    async def _failed(self, reason: str, message: str, started: float) -> None:
        previous = self._last_reason()
        now = self._clock()
        outcome = Outcome(now, time.perf_counter() - started, reason=reason, message=message)
        self._failures += 1
        await self._set(lambda last: replace(last, outcome=outcome))
        self._observer.poll_finished(outcome, None)
        if self._failing_since is None:
            self._failing_since = now
            self._log.warning("poll failed", reason=reason, error=message)
        elif previous != reason:
            self._log.warning("poll still failing", reason=reason, error=message)
        else:
            self._log.debug("poll failed again", reason=reason, error=message,
                            consecutive=self._failures)  # fmt: skip

    async def _set(self, change: Callable[[PollState], PollState]) -> PollState:
        """Publish ``change(current state)``; one publication at a time, in order."""
        async with self._publishing:
            state = change(self.state)
            await self._publish(state)
            self.state = state
        return state

    # ------------------------------------------------------------------ status sweep

    async def _status_loop(self) -> None:
        while True:
            if self.state.snapshot is None:
                await self._sleep(min(1.0, self._settings.interval))
                continue
            started = time.monotonic()
            await self.sweep_statuses()
            elapsed = time.monotonic() - started
            await self._sleep(max(self._settings.status_interval - elapsed,
                                  self._client.held_for, 0.0))  # fmt: skip

    async def sweep_statuses(self) -> None:
        """Ask every server's status, a few at a time; publish the last snapshot with them.

        The answers also go into every later snapshot, until the next sweep replaces them.
        """
        snapshot = self.state.snapshot
        if snapshot is None:
            return
        servers = snapshot.servers
        limit = asyncio.Semaphore(self._settings.status_concurrency)
        results = dict(self._statuses)
        failures: dict[str, int] = {}

        async def one(server_id: str) -> None:
            async with limit:
                # Status calls can wait; the listing polls get the window's last 20 %.
                await self._client.budget.pace()
                try:
                    results[server_id] = await self._client.server_status(server_id)
                except EvoticError as error:
                    failures[error.reason] = failures.get(error.reason, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one(server.id) for server in servers))
        self._statuses = _only(servers, results)
        self._observer.phase("status", time.perf_counter() - started)
        if failures:
            self._log.warning("status sweep incomplete", failed=sum(failures.values()),
                              of=len(servers), reasons=failures)  # fmt: skip
        await self._set(self._with_statuses)

    def _with_statuses(self, state: PollState) -> PollState:
        current = state.snapshot
        if current is None:
            return state
        statuses = _only(current.servers, self._statuses)
        return replace(state, snapshot=replace(current, statuses=statuses))


def _only(
    servers: tuple[Server, ...], statuses: Mapping[str, ServerStatus]
) -> Mapping[str, ServerStatus]:
    """Known task statuses of these servers only: a deleted server's status goes too."""
    ids = {server.id for server in servers}
    return MappingProxyType({k: v for k, v in statuses.items() if k in ids})
