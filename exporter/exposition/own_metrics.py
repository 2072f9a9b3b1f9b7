"""The exporter's own metrics for one account, kept by prometheus_client in a registry of its own.

Each part records what it knows when it knows it: the poller each poll's outcome, the exposition
cache each rendering's time, the API client each request, a scrape what it serves (``evotic_up``
and ``evotic_servers``, which depend on the time as well as on the last poll). Names, types,
help texts and labels come from ``families.py``. An account's metrics are rendered once per
change, not once per scrape: between two polls, ``/probe`` serves the same bytes.

``evotic_up 1`` / ``evotic_poll_errors_total{reason="timeout"} 3`` / ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import disable_created_metrics as _untyped_disable_created_metrics
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.api.errors import POLL_REASONS
from exporter.exposition.families import (
    API_DURATION,
    API_REQUESTS,
    BUILD_INFO,
    LAST_SUCCESS,
    POLL_DURATION,
    POLL_ERRORS,
    POLL_PHASE,
    RATE_LIMIT,
    RATE_REMAINING,
    RELOAD_OK,
    RELOAD_TIME,
    REQUEST_BUCKETS,
    SERVERS,
    SERVERS_KEPT,
    SERVERS_REJECTED,
    SNAPSHOT_METRICS,
    UP,
)
from exporter.exposition.render import Format
from exporter.polling.health import Health
from exporter.polling.snapshot import Outcome, Snapshot

disable_created_metrics = cast(Callable[[], None], _untyped_disable_created_metrics)
_openmetrics_latest = cast(Callable[[CollectorRegistry], bytes], openmetrics.generate_latest)


def render_registry(registry: CollectorRegistry, fmt: Format) -> bytes:
    """``registry`` in the text format, or in OpenMetrics with its ``# EOF``."""
    return generate_latest(registry) if fmt == "text" else _openmetrics_latest(registry)


class AccountMetrics:
    """``evotic_up``, the poll's figures and the API requests of one account."""

    def __init__(self) -> None:
        # The exporter never exposed ``*_created`` series; they would be new series per label.
        disable_created_metrics()
        self.registry = registry = CollectorRegistry()
        self._up = Gauge(UP.name, UP.help, registry=registry)
        self._servers = Gauge(SERVERS.name, SERVERS.help, registry=registry)
        self._rejected = Gauge(SERVERS_REJECTED.name, SERVERS_REJECTED.help, registry=registry)
        self._kept = Gauge(SERVERS_KEPT.name, SERVERS_KEPT.help, registry=registry)
        # Absent, not 0, until there is something to say: registered on first use.
        self._last_success = Gauge(LAST_SUCCESS.name, LAST_SUCCESS.help, registry=None)
        self._duration = Gauge(POLL_DURATION.name, POLL_DURATION.help, registry=None)
        self._rate_limit = Gauge(RATE_LIMIT.name, RATE_LIMIT.help, registry=None)
        self._rate_remaining = Gauge(RATE_REMAINING.name, RATE_REMAINING.help, registry=None)
        self._phases = Gauge(POLL_PHASE.name, POLL_PHASE.help, POLL_PHASE.labels, registry=registry)
        self._errors = Counter(
            POLL_ERRORS.name, POLL_ERRORS.help, POLL_ERRORS.labels, registry=registry
        )
        for reason in POLL_REASONS:
            self._errors.labels(reason)
        self._requests = Counter(
            API_REQUESTS.name, API_REQUESTS.help, API_REQUESTS.labels, registry=registry
        )
        self._request_seconds = Histogram(
            API_DURATION.name, API_DURATION.help, API_DURATION.labels,
            buckets=REQUEST_BUCKETS, registry=registry,
        )  # fmt: skip
        self._shown: set[Gauge] = set()
        self._serving: tuple[float, int, int] | None = None
        self._rendered: dict[Format, bytes] = {}

    def rendered(self, fmt: Format) -> bytes:
        """The registry in ``fmt``, rendered at the first scrape after a change of any of its
        metrics; every method below that changes one says so."""
        body = self._rendered.get(fmt)
        if body is None:
            body = self._rendered[fmt] = render_registry(self.registry, fmt)
        return body

    def _changed(self) -> None:
        self._rendered.clear()

    def _show(self, gauge: Gauge) -> Gauge:
        if gauge not in self._shown:
            self._shown.add(gauge)
            self.registry.register(gauge)
        return gauge

    def poll_finished(self, outcome: Outcome, snapshot: Snapshot | None) -> None:
        """One poll's outcome; ``snapshot`` is the one it published if it succeeded."""
        self._changed()
        self._show(self._duration).set(outcome.duration)
        if outcome.reason is not None:
            self._errors.labels(outcome.reason).inc()
            return
        if snapshot is not None:
            self._rejected.set(snapshot.rejected)
        self._show(self._last_success).set(outcome.finished_at)
        for phase, seconds in outcome.phases:
            self._phases.labels(phase).set(seconds)

    def phase(self, phase: str, seconds: float) -> None:
        """A phase timed outside the poll itself: ``render`` and ``status``."""
        self._changed()
        self._phases.labels(phase).set(seconds)

    def request(self, endpoint: str, code: str, seconds: float) -> None:
        """One HTTP request to the API, answered or not (an ``exporter.api`` observer)."""
        self._changed()
        self._requests.labels(endpoint, code).inc()
        self._request_seconds.labels(endpoint).observe(seconds)

    def rate_limit(self, limit: int, remaining: int) -> None:
        """What the API last said of its rate limit window (a ``RateBudget`` listener)."""
        self._changed()
        self._show(self._rate_limit).set(limit)
        self._show(self._rate_remaining).set(remaining)

    def serving(self, health: Health) -> None:
        """What the scrape being answered serves: whether the account is up (0 when the data is
        stale, whatever the last poll did), how many servers it exports and how many of them are
        kept from their last valid record (all 0 when the data is stale)."""
        figures = (1.0 if health.up else 0.0, health.servers, health.kept)
        if figures == self._serving:
            return
        self._changed()
        self._serving = figures
        up, servers, kept = figures
        self._up.set(up)
        self._servers.set(servers)
        self._kept.set(kept)


class ReloadMetrics:
    """Whether the last reload of the files worked, and when the last good load was."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._ok = Gauge(RELOAD_OK.name, RELOAD_OK.help, registry=registry)
        self._time = Gauge(RELOAD_TIME.name, RELOAD_TIME.help, registry=registry)

    def loaded(self, ok: bool) -> None:
        self._ok.set(1.0 if ok else 0.0)
        if ok:
            self._time.set(self._clock())


class LabelledAccounts(Collector):
    """Every account's own metrics in one set of families, each sample labelled with its
    account: ``evotic_up{account="prod"} 1``. ``accounts`` is read at every collection, so an
    account that is gone is gone from the next scrape."""

    def __init__(self, accounts: Callable[[], Mapping[str, AccountMetrics]]) -> None:
        self._accounts = accounts

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for name, metrics in self._accounts().items():
            for family in metrics.registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                merged.samples.extend(
                    sample._replace(labels={"account": name, **sample.labels})
                    for sample in family.samples
                )
        yield from families.values()


class AccountScalars(Collector):
    """The figures a snapshot has once, not per server (the billing period), of every account
    whose data is served, labelled with it: ``evotic_traffic_period_end_timestamp_seconds{
    account="prod"}``. ``/probe`` has them in the account's exposition; a multi-account
    ``/metrics``, which has no per-server part, has them from here."""

    def __init__(self, snapshots: Callable[[], Mapping[str, Snapshot | None]]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        served = self._snapshots()
        for spec in SNAPSHOT_METRICS:
            if spec.scalar is None:
                continue
            family = GaugeMetricFamily(spec.name, spec.help, labels=["account"])
            for name, snapshot in served.items():
                value = None if snapshot is None else spec.scalar(snapshot)
                if value is not None:
                    family.add_metric([name], value)
            if family.samples:
                yield family


def process_registry(version: str) -> CollectorRegistry:
    """The process's metrics: build info and prometheus_client's ``process_*``."""
    registry = CollectorRegistry()
    build = Gauge(BUILD_INFO.name, BUILD_INFO.help, BUILD_INFO.labels, registry=registry)
    build.labels(version).set(1.0)
    ProcessCollector(registry=registry)
    return registry
