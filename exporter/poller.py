"""The background loop: fetch -> validate -> snapshot -> render -> swap.

One ``Poller`` serves one Evotic account with its own client and its own snapshot, so several
accounts can run side by side. Scrapes never wait for it: they read ``Poller.view()``, which
only combines values the poller swapped in whole.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import structlog

from exporter.api.client import EvoticClient, Listing
from exporter.api.errors import REASONS, EvoticError, TokenFileError
from exporter.api.models import Server, ServerStatus
from exporter.config import Settings, read_token_file
from exporter.exposition import Exposition
from exporter.logging import Redactor
from exporter.metrics import ExporterState
from exporter.quota import Quotas, billing_period
from exporter.snapshot import Snapshot

POLL_REASONS = (*REASONS, "internal")


class TokenSource:
    """The bearer token: fixed, or read from a file at the start of every poll."""

    def __init__(self, redactor: Redactor, token: str | None = None, path: Path | None = None):
        if (token is None) == (path is None):
            raise ValueError("exactly one of token and path")
        self._redactor = redactor
        self._path = path
        self._token = ""
        if token is not None:
            self._set(token)

    def _set(self, token: str) -> None:
        self._redactor.add(token)
        self._token = token

    def refresh(self) -> None:
        """Re-read the token file, so a rotated secret is used from this poll on."""
        if self._path is None:
            return
        try:
            self._set(read_token_file(self._path))
        except ValueError as error:
            raise TokenFileError(str(error).removeprefix("api_token_file: ")) from None

    def __call__(self) -> str:
        return self._token


@dataclass(frozen=True)
class PollSettings:
    """The poller's timing. ``deadline`` bounds a whole poll, retries included."""

    interval: float = 60.0
    stale_after: float = 600.0
    collect_status: bool = False
    status_concurrency: int = 4
    status_interval: float = 300.0
    quotas: Quotas = field(default_factory=lambda: Quotas({}))
    period_start_day: int = 1

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
            quotas=settings.quotas(),
            period_start_day=settings.traffic_period_start_day,
        )


@dataclass(frozen=True)
class View:
    """What a scrape serves: per-server exposition, own-metric state, and readiness."""

    exposition: Exposition
    state: ExporterState
    ready: bool
    reason: str


@dataclass(frozen=True)
class _Published:
    exposition: Exposition | None = None
    state: ExporterState = field(default_factory=ExporterState)
    failing_reason: str | None = None


_EMPTY = Snapshot(servers=(), taken_at=0.0)


class Poller:
    """Polls one account forever; ``view()`` is the only thing scrapes touch."""

    def __init__(
        self,
        client: EvoticClient,
        token: TokenSource,
        settings: PollSettings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._client = client
        self._token = token
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._log = logger or structlog.get_logger("exporter.poller")
        self._published = _Published()
        self._empty = Exposition(_EMPTY)
        self._statuses: Mapping[str, ServerStatus] = MappingProxyType({})
        self._failures = 0
        self._failing_since: float | None = None
        self.poll_errors: dict[str, int] = dict.fromkeys(POLL_REASONS, 0)
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ read side

    def state(self) -> ExporterState:
        """The exporter's own metrics as a scrape should see them (stale data counts 0)."""
        return self.view().state

    def view(self) -> View:
        published = self._published
        state = published.state
        if published.exposition is None:
            why = published.failing_reason
            reason = f"no successful poll yet (last error: {why})" if why else "first poll pending"
            return View(self._empty, state, False, reason)
        age = self._clock() - (state.last_success or 0.0)
        if age > self._settings.stale_after:
            reason = (
                f"data is stale: last successful poll {age:.0f} s ago "
                f"(limit {self._settings.stale_after:.0f} s, last error: "
                f"{published.failing_reason or 'none'})"
            )
            return View(self._empty, replace(state, servers=0), False, reason)
        return View(published.exposition, state, True, "ok")

    def alive(self) -> bool:
        """True while the poll loop (and the status loop, if any) is running."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    # ------------------------------------------------------------------ loops

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="poll-loop"))
        if self._settings.collect_status:
            self._tasks.append(asyncio.create_task(self._status_loop(), name="status-loop"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def _poll_loop(self) -> None:
        await self._sleep(self._rng.uniform(0.0, self._settings.startup_jitter))
        while True:
            started = time.monotonic()
            await self.poll_once()
            delay = self._next_delay() - (time.monotonic() - started)
            await self._sleep(max(delay, self._client.held_for, 0.0))

    def _next_delay(self) -> float:
        interval = self._settings.interval
        if self._failures <= 1:
            return interval
        return min(interval * 2.0 ** (self._failures - 1), self._settings.backoff_cap)

    async def poll_once(self) -> bool:
        """One poll; True when it succeeded. Never raises (but for cancellation)."""
        started = time.perf_counter()
        try:
            deadline = self._settings.deadline
            async with asyncio.timeout(deadline):
                self._token.refresh()
                with self._client.deadline(deadline):
                    listing = await self._client.list_servers()
                render_started = time.perf_counter()
                now = self._clock()
                servers = self._keep_last_good(listing)
                snapshot = Snapshot(
                    servers=servers,
                    taken_at=now,
                    statuses=self._statuses_for(servers),
                    quotas=self._settings.quotas,
                    period=billing_period(now, self._settings.period_start_day),
                )
                exposition = await asyncio.to_thread(Exposition, snapshot)
                render_seconds = time.perf_counter() - render_started
        except TimeoutError:
            self._failed("timeout", f"poll exceeded its deadline of {self._settings.deadline} s",
                         started)  # fmt: skip
            return False
        except EvoticError as error:
            self._failed(error.reason, str(error), started)
            return False
        except Exception as error:  # a bug must not end the loop; say so loudly, once
            if self._published.failing_reason != "internal":
                self._log.exception("poll failed unexpectedly", error_type=type(error).__name__)
            self._failed("internal", type(error).__name__, started)
            return False
        self._succeeded(listing, exposition, render_seconds, started)
        return True

    def _keep_last_good(self, listing: Listing) -> tuple[Server, ...]:
        """The listed servers, plus the last good record of each server set aside this time.

        A server whose record turns invalid keeps its last valid data instead of vanishing as
        if deleted; a server never seen valid is not exported until it is.
        """
        published = self._published.exposition
        if not listing.rejected or published is None:
            return listing.servers
        listed = {server.id for server in listing.servers}
        wanted = {r.server_id for r in listing.rejected if r.server_id} - listed
        kept = [server for server in published.snapshot.servers if server.id in wanted]
        return listing.servers + tuple(kept)

    def _statuses_for(self, servers: tuple[Server, ...]) -> Mapping[str, ServerStatus]:
        """Known task statuses of these servers only: a deleted server's status goes too."""
        return _only(servers, self._statuses)

    def _succeeded(
        self, listing: Listing, exposition: Exposition, render_seconds: float, started: float
    ) -> None:
        now = self._clock()
        duration = time.perf_counter() - started
        state = ExporterState(
            up=True,
            servers=len(listing.servers),
            rejected=len(listing.rejected),
            last_success=now,
            poll_duration=duration,
            phases=(
                ("fetch", listing.fetch_seconds),
                ("validate", listing.validate_seconds),
                ("render", render_seconds),
            ),
        )
        first = self._published.exposition is None
        self._published = _Published(exposition, state, None)
        if listing.rejected:
            sample = listing.rejected[0]
            self._log.warning(
                "servers set aside", count=len(listing.rejected),
                example_id=sample.server_id, example_error="; ".join(sample.errors),
            )  # fmt: skip
        if self._failing_since is not None:
            self._log.info(
                "poll recovered", outage_seconds=round(now - self._failing_since, 1),
                servers=state.servers,
            )  # fmt: skip
        elif first:
            self._log.info("first poll succeeded", servers=state.servers,
                           seconds=round(duration, 3))  # fmt: skip
        self._failures = 0
        self._failing_since = None

    def _failed(self, reason: str, message: str, started: float) -> None:
        self.poll_errors[reason] = self.poll_errors.get(reason, 0) + 1
        self._failures += 1
        published = self._published
        state = replace(published.state, up=False, poll_duration=time.perf_counter() - started)
        self._published = _Published(published.exposition, state, reason)
        if self._failing_since is None:
            self._failing_since = self._clock()
            self._log.warning("poll failed", reason=reason, error=message)
        elif published.failing_reason != reason:
            self._log.warning("poll still failing", reason=reason, error=message)
        else:
            self._log.debug("poll failed again", reason=reason, error=message,
                            consecutive=self._failures)  # fmt: skip

    # ------------------------------------------------------------------ status sweep

    async def _status_loop(self) -> None:
        while True:
            snapshot = self._published.exposition
            if snapshot is None:
                await self._sleep(min(1.0, self._settings.interval))
                continue
            started = time.monotonic()
            await self.sweep_statuses()
            elapsed = time.monotonic() - started
            await self._sleep(max(self._settings.status_interval - elapsed,
                                  self._client.held_for, 0.0))  # fmt: skip

    async def sweep_statuses(self) -> None:
        """Ask every server's status, a few at a time, then re-render with the answers."""
        published = self._published
        if published.exposition is None:
            return
        servers = published.exposition.snapshot.servers
        limit = asyncio.Semaphore(self._settings.status_concurrency)
        results = dict(self._statuses)
        failures: dict[str, int] = {}

        async def one(server_id: str) -> None:
            async with limit:
                try:
                    results[server_id] = await self._client.server_status(server_id)
                except EvoticError as error:
                    failures[error.reason] = failures.get(error.reason, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one(server.id) for server in servers))
        sweep_seconds = time.perf_counter() - started
        self._statuses = _only(servers, results)
        if failures:
            self._log.warning("status sweep incomplete", failed=sum(failures.values()),
                              of=len(servers), reasons=failures)  # fmt: skip
        current = self._published
        if current.exposition is None:
            return
        snapshot = current.exposition.snapshot
        snapshot = replace(snapshot, statuses=self._statuses_for(snapshot.servers))
        exposition = await asyncio.to_thread(Exposition, snapshot)
        phases = tuple(p for p in current.state.phases if p[0] != "status")
        state = replace(current.state, phases=(*phases, ("status", sweep_seconds)))
        if self._published is current:
            self._published = replace(current, exposition=exposition, state=state)


def _only(
    servers: tuple[Server, ...], statuses: Mapping[str, ServerStatus]
) -> Mapping[str, ServerStatus]:
    ids = {server.id for server in servers}
    return MappingProxyType({k: v for k, v in statuses.items() if k in ids})
