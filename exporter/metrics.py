"""Every metric the exporter serves: names, types, units, help texts and labels.

This module is the one place that knows them. The per-server families are built from a
``Snapshot`` and rendered to bytes once per poll by a fast renderer whose output is the same,
byte for byte, as prometheus_client's for the same families (``tests/test_render.py`` holds it
to that). The exporter's own metrics are few and change on every request, so they are rendered
by prometheus_client on every scrape and appended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

from exporter.snapshot import Snapshot

MIB = 2**20
GIB = 2**30
DIRECTIONS = ("incoming", "outgoing")
SERVER_LABELS = ("server_id", "hostname")

Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class MetricDef:
    """One metric family as the public contract names it.

    ``name`` is the sample name in the Prometheus text format, so counters end in ``_total``.
    ``labels`` are the labels besides ``server_id`` and ``hostname`` on per-server metrics.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    per_server: bool = True

    @property
    def all_labels(self) -> tuple[str, ...]:
        return (SERVER_LABELS + self.labels) if self.per_server else self.labels

    @property
    def family_name(self) -> str:
        """The family name OpenMetrics and prometheus_client use: counters lose ``_total``."""
        return self.name[: -len("_total")] if self.kind == "counter" else self.name


_REFRESH = " Refreshed every poll interval."

SERVER_INFO = MetricDef(
    "evotic_server_info", "gauge",
    "Server identity, always 1; labels uuid, node and os come from the API." + _REFRESH,
    ("uuid", "node", "os"),
)  # fmt: skip
SERVER_STATUS = MetricDef(
    "evotic_server_status", "gauge",
    "1 for the server's current status (field status); one series per server." + _REFRESH,
    ("status",),
)  # fmt: skip
SERVER_RUNNING = MetricDef(
    "evotic_server_running", "gauge",
    "1 when the server's status is started, else 0 (field status)." + _REFRESH,
)  # fmt: skip
SERVER_CREATED = MetricDef(
    "evotic_server_created_timestamp_seconds", "gauge",
    "When the server was created, in Unix seconds (field created_at)." + _REFRESH,
)  # fmt: skip
SERVER_CPU_CORES = MetricDef(
    "evotic_server_cpu_cores", "gauge",
    "Booked CPU cores (field specifications.cpu)." + _REFRESH,
)  # fmt: skip
SERVER_MEMORY = MetricDef(
    "evotic_server_memory_bytes", "gauge",
    "Booked memory in bytes (field specifications.ram, MB read as MiB)." + _REFRESH,
)  # fmt: skip
SERVER_DISK = MetricDef(
    "evotic_server_disk_bytes", "gauge",
    "Booked disk in bytes (field specifications.disk, GB read as GiB)." + _REFRESH,
)  # fmt: skip
SERVER_CPU_USAGE = MetricDef(
    "evotic_server_cpu_usage_ratio", "gauge",
    "CPU usage as a ratio, 1 = 100 % (field usage.cpu, percent / 100)." + _REFRESH,
)  # fmt: skip
SERVER_MEMORY_USED = MetricDef(
    "evotic_server_memory_used_bytes", "gauge",
    "Memory in use in bytes (field usage.ram, MB read as MiB)." + _REFRESH,
)  # fmt: skip
SERVER_DISK_USED = MetricDef(
    "evotic_server_disk_used_bytes", "gauge",
    "Disk in use in bytes (field usage.disk, GB read as GiB)." + _REFRESH,
)  # fmt: skip
SERVER_TRAFFIC = MetricDef(
    "evotic_server_traffic_bytes_total", "counter",
    "Traffic in bytes in the current billing period, per direction; resets when a period "
    "starts (field usage.traffic.<direction>.value)." + _REFRESH,
    ("direction",),
)  # fmt: skip
SERVER_TRAFFIC_PREVIOUS = MetricDef(
    "evotic_server_traffic_previous_period_bytes", "gauge",
    "Traffic in bytes in the previous billing period, per direction "
    "(field usage.traffic.<direction>.prev)." + _REFRESH,
    ("direction",),
)  # fmt: skip
SERVER_TRAFFIC_EXCEEDED = MetricDef(
    "evotic_server_traffic_limit_exceeded", "gauge",
    "1 when the API reports the traffic limit exceeded, per direction "
    "(field usage.traffic.<direction>.is_exceeded)." + _REFRESH,
    ("direction",),
)  # fmt: skip
SERVER_TRAFFIC_QUOTA = MetricDef(
    "evotic_server_traffic_quota_bytes", "gauge",
    "Traffic included per billing period in bytes, per direction, where a quota is configured "
    "(EVOTIC_TRAFFIC_QUOTA_BYTES, EVOTIC_TRAFFIC_QUOTA_FILE)." + _REFRESH,
    ("direction",),
)  # fmt: skip
SERVER_IP = MetricDef(
    "evotic_server_ip_address_info", "gauge",
    "One series per IP address of the server, always 1 (field ip_addresses)." + _REFRESH,
    ("ip", "primary", "family"),
)  # fmt: skip
SERVER_PROCESSING = MetricDef(
    "evotic_server_processing", "gauge",
    "1 while the server runs a task (status endpoint field is_processing); "
    "only with --collector.status." + _REFRESH,
)  # fmt: skip
SERVER_PROGRESS = MetricDef(
    "evotic_server_progress_ratio", "gauge",
    "Progress of the running task as a ratio (status endpoint field progress / 100), "
    "label task from its field status; only while processing, with --collector.status."
    + _REFRESH,
    ("task",),
)  # fmt: skip

SERVER_METRICS: tuple[MetricDef, ...] = (
    SERVER_INFO, SERVER_STATUS, SERVER_RUNNING, SERVER_CREATED, SERVER_CPU_CORES,
    SERVER_MEMORY, SERVER_DISK, SERVER_CPU_USAGE, SERVER_MEMORY_USED, SERVER_DISK_USED,
    SERVER_TRAFFIC, SERVER_TRAFFIC_PREVIOUS, SERVER_TRAFFIC_EXCEEDED, SERVER_TRAFFIC_QUOTA,
    SERVER_IP, SERVER_PROCESSING, SERVER_PROGRESS,
)  # fmt: skip

PERIOD_START = MetricDef(
    "evotic_traffic_period_start_timestamp_seconds", "gauge",
    "Start of the current billing period in Unix seconds (EVOTIC_TRAFFIC_PERIOD_START_DAY, UTC).",
    per_server=False,
)  # fmt: skip
PERIOD_END = MetricDef(
    "evotic_traffic_period_end_timestamp_seconds", "gauge",
    "End of the current billing period in Unix seconds (EVOTIC_TRAFFIC_PERIOD_START_DAY, UTC).",
    per_server=False,
)  # fmt: skip

# Rendered with the per-server families, once per poll.
SNAPSHOT_METRICS: tuple[MetricDef, ...] = (*SERVER_METRICS, PERIOD_START, PERIOD_END)

UP = MetricDef(
    "evotic_up", "gauge", "1 when the last poll of the API succeeded, else 0.", per_server=False
)
SERVERS = MetricDef(
    "evotic_servers", "gauge", "Servers in the snapshot being served.", per_server=False
)
SERVERS_REJECTED = MetricDef(
    "evotic_servers_rejected", "gauge",
    "Listed server records set aside by the last successful poll (invalid or duplicate).",
    per_server=False,
)  # fmt: skip
LAST_SUCCESS = MetricDef(
    "evotic_last_successful_poll_timestamp_seconds", "gauge",
    "When the last successful poll finished, in Unix seconds.", per_server=False,
)  # fmt: skip
POLL_DURATION = MetricDef(
    "evotic_poll_duration_seconds", "gauge",
    "Duration of the last poll in seconds, successful or not.", per_server=False,
)  # fmt: skip
POLL_PHASE = MetricDef(
    "evotic_poll_phase_duration_seconds", "gauge",
    "Seconds the last successful poll spent per phase (fetch, validate, status, render).",
    ("phase",), per_server=False,
)  # fmt: skip
POLL_ERRORS = MetricDef(
    "evotic_poll_errors_total", "counter",
    "Failed polls by reason (auth, rate_limited, server_error, client_error, timeout, "
    "connection, invalid_response, token_file).",
    ("reason",), per_server=False,
)  # fmt: skip
API_REQUESTS = MetricDef(
    "evotic_api_requests_total", "counter",
    "HTTP requests sent to the Evotic API by endpoint and status code "
    "(code is timeout or connection when no answer came).",
    ("endpoint", "code"), per_server=False,
)  # fmt: skip
API_DURATION = MetricDef(
    "evotic_api_request_duration_seconds", "histogram",
    "Duration of HTTP requests to the Evotic API in seconds, by endpoint.",
    ("endpoint",), per_server=False,
)  # fmt: skip
BUILD_INFO = MetricDef(
    "evotic_exporter_build_info", "gauge", "Exporter version, always 1.", ("version",),
    per_server=False,
)  # fmt: skip

EXPORTER_METRICS: tuple[MetricDef, ...] = (
    UP, SERVERS, SERVERS_REJECTED, LAST_SUCCESS, POLL_DURATION, POLL_PHASE, POLL_ERRORS,
    API_REQUESTS, API_DURATION, BUILD_INFO,
)  # fmt: skip

REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Sample = tuple[tuple[str, ...], float]

# prometheus_client's own number formatting, so both renderers agree to the byte.
floatToGoString = cast(Callable[[float], str], _untyped_float_to_go_string)


# --------------------------------------------------------------------------- building


def server_samples(snapshot: Snapshot) -> dict[MetricDef, list[Sample]]:
    """Every sample of a snapshot, label values in ``MetricDef.all_labels`` order.

    A server without usage data gets no usage or traffic samples (absent, not zero).
    """
    out: dict[MetricDef, list[Sample]] = {metric: [] for metric in SNAPSHOT_METRICS}
    if snapshot.period is not None:
        out[PERIOD_START].append(((), snapshot.period[0]))
        out[PERIOD_END].append(((), snapshot.period[1]))
    quotas, quota = snapshot.quotas, out[SERVER_TRAFFIC_QUOTA]
    info, status_, running = out[SERVER_INFO], out[SERVER_STATUS], out[SERVER_RUNNING]
    created, cores, memory, disk = (
        out[SERVER_CREATED], out[SERVER_CPU_CORES], out[SERVER_MEMORY], out[SERVER_DISK]
    )  # fmt: skip
    cpu_used, memory_used, disk_used = (
        out[SERVER_CPU_USAGE], out[SERVER_MEMORY_USED], out[SERVER_DISK_USED]
    )  # fmt: skip
    traffic, previous, exceeded = (
        out[SERVER_TRAFFIC], out[SERVER_TRAFFIC_PREVIOUS], out[SERVER_TRAFFIC_EXCEEDED]
    )  # fmt: skip
    ips, processing, progress = out[SERVER_IP], out[SERVER_PROCESSING], out[SERVER_PROGRESS]
    statuses = snapshot.statuses

    for server in snapshot.servers:
        key = (server.id, server.hostname)
        info.append(((*key, server.uuid or "", server.node or "", server.os or ""), 1.0))
        status_.append(((*key, server.status or "unknown"), 1.0))
        running.append((key, 1.0 if server.status == "started" else 0.0))
        if server.created_at is not None:
            created.append((key, server.created_at.timestamp()))
        spec = server.specifications
        if spec is not None:
            if spec.cpu is not None:
                cores.append((key, spec.cpu))
            if spec.ram is not None:
                memory.append((key, spec.ram * MIB))
            if spec.disk is not None:
                disk.append((key, spec.disk * GIB))
        usage = server.usage
        if usage is not None:
            if usage.cpu is not None:
                cpu_used.append((key, usage.cpu / 100.0))
            if usage.ram is not None:
                memory_used.append((key, usage.ram * MIB))
            if usage.disk is not None:
                disk_used.append((key, usage.disk * GIB))
            if usage.traffic is not None:
                for direction in DIRECTIONS:
                    flow = getattr(usage.traffic, direction)
                    if flow is None:
                        continue
                    labels = (*key, direction)
                    if flow.value is not None:
                        traffic.append((labels, flow.value))
                    if flow.prev is not None:
                        previous.append((labels, flow.prev))
                    if flow.is_exceeded is not None:
                        exceeded.append((labels, 1.0 if flow.is_exceeded else 0.0))
        for direction, size in quotas.for_server(server).items():
            quota.append(((*key, direction), size))
        for address in server.ip_addresses or ():
            primary = "true" if address.is_primary else "false"
            ips.append(((*key, address.ip, primary, address.family), 1.0))
        task = statuses.get(server.id)
        if task is not None:
            processing.append((key, 1.0 if task.is_processing else 0.0))
            if task.is_processing and task.progress is not None:
                progress.append(((*key, task.status or "unknown"), task.progress / 100.0))
    return out


# --------------------------------------------------------------------------- rendering

Format = Literal["text", "openmetrics"]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str, fmt: Format) -> str:
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n")
    return escaped.replace('"', '\\"') if fmt == "openmetrics" else escaped


def render_families(families: dict[MetricDef, list[Sample]], fmt: Format) -> bytes:
    """Render families in the text format (0.0.4) or OpenMetrics 1.0 (without ``# EOF``).

    Labels are written sorted by name and values formatted as Go does, as prometheus_client
    does. Escaped label values are memoised: hostnames and ids repeat in every family.
    """
    escaped: dict[str, str] = {}
    values: dict[float, str] = {}
    out: list[str] = []
    for metric, samples in families.items():
        header = metric.name if fmt == "text" else metric.family_name
        kind = "counter" if metric.kind == "counter" else "gauge"
        out.append(f"# HELP {header} {_escape_help(metric.help, fmt)}\n# TYPE {header} {kind}\n")
        names = metric.all_labels
        order = sorted(range(len(names)), key=names.__getitem__)
        prefixes = [("," if n else "{") + names[i] + '="' for n, i in enumerate(order)]
        name = metric.name
        for labels, value in samples:
            parts = [name]
            for prefix, i in zip(prefixes, order, strict=True):
                raw = labels[i]
                text = escaped.get(raw)
                if text is None:
                    text = escaped[raw] = _escape_label(raw)
                parts += (prefix, text, '"')
            number = values.get(value)
            if number is None:
                number = values[value] = floatToGoString(value)
            parts += ("} " if prefixes else " ", number, "\n")
            out.append("".join(parts))
    return "".join(out).encode("utf-8")


def to_client_metrics(families: dict[MetricDef, list[Sample]]) -> Iterator[Metric]:
    """The same families as prometheus_client metric objects, for its own renderers."""
    for metric, samples in families.items():
        family: Metric
        if metric.kind == "counter":
            family = CounterMetricFamily(metric.family_name, metric.help, labels=metric.all_labels)
        else:
            family = GaugeMetricFamily(metric.name, metric.help, labels=metric.all_labels)
        for labels, value in samples:
            family.add_metric(list(labels), value)
        yield family


# --------------------------------------------------------------------------- own metrics


class ApiStats:
    """Counts and timings of API requests; fed by the client, read on every scrape."""

    def __init__(self, buckets: Sequence[float] = REQUEST_BUCKETS) -> None:
        self._buckets = tuple(buckets)
        self.requests: dict[tuple[str, str], int] = {}
        self._durations: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, endpoint: str, code: str, seconds: float) -> None:
        self.requests[(endpoint, code)] = self.requests.get((endpoint, code), 0) + 1
        counts = self._durations.setdefault(endpoint, [0] * (len(self._buckets) + 1))
        for i, bound in enumerate(self._buckets):
            if seconds <= bound:
                counts[i] += 1
        counts[-1] += 1
        self._sums[endpoint] = self._sums.get(endpoint, 0.0) + seconds

    def histograms(self) -> Iterator[tuple[str, list[tuple[str, float]], float]]:
        for endpoint, counts in sorted(self._durations.items()):
            bounds = [floatToGoString(b) for b in self._buckets] + ["+Inf"]
            yield endpoint, list(zip(bounds, map(float, counts), strict=True)), self._sums[endpoint]


@dataclass(frozen=True)
class ExporterState:
    """What the exporter's own metrics report; the poller publishes a new one per poll."""

    up: bool = False
    servers: int = 0
    rejected: int = 0
    last_success: float | None = None
    poll_duration: float | None = None
    phases: tuple[tuple[str, float], ...] = ()


class ExporterCollector(Collector):
    """The exporter's own metrics, collected fresh on every scrape.

    ``evotic_up 1`` / ``evotic_poll_errors_total{reason="timeout"} 3`` / ...
    """

    def __init__(
        self,
        state: Callable[[], ExporterState],
        api: ApiStats,
        poll_errors: Callable[[], dict[str, int]],
        version: str,
    ) -> None:
        self._state = state
        self._api = api
        self._poll_errors = poll_errors
        self._version = version

    def collect(self) -> Iterable[Metric]:
        state = self._state()
        yield GaugeMetricFamily(UP.name, UP.help, value=1.0 if state.up else 0.0)
        yield GaugeMetricFamily(SERVERS.name, SERVERS.help, value=state.servers)
        yield GaugeMetricFamily(SERVERS_REJECTED.name, SERVERS_REJECTED.help, value=state.rejected)
        last = GaugeMetricFamily(LAST_SUCCESS.name, LAST_SUCCESS.help)
        if state.last_success is not None:
            last.add_metric([], state.last_success)
        yield last
        duration = GaugeMetricFamily(POLL_DURATION.name, POLL_DURATION.help)
        if state.poll_duration is not None:
            duration.add_metric([], state.poll_duration)
        yield duration
        phases = GaugeMetricFamily(POLL_PHASE.name, POLL_PHASE.help, labels=POLL_PHASE.labels)
        for phase, seconds in state.phases:
            phases.add_metric([phase], seconds)
        yield phases
        errors = CounterMetricFamily(
            POLL_ERRORS.family_name, POLL_ERRORS.help, labels=POLL_ERRORS.labels
        )
        for reason, count in sorted(self._poll_errors().items()):
            errors.add_metric([reason], count)
        yield errors
        requests = CounterMetricFamily(
            API_REQUESTS.family_name, API_REQUESTS.help, labels=API_REQUESTS.labels
        )
        for (endpoint, code), count in sorted(self._api.requests.items()):
            requests.add_metric([endpoint, code], count)
        yield requests
        histogram = HistogramMetricFamily(
            API_DURATION.name, API_DURATION.help, labels=API_DURATION.labels
        )
        for endpoint, buckets, total in self._api.histograms():
            histogram.add_metric([endpoint], buckets, total)
        yield histogram
        build = GaugeMetricFamily(BUILD_INFO.name, BUILD_INFO.help, labels=BUILD_INFO.labels)
        build.add_metric([self._version], 1.0)
        yield build


def markdown_table() -> str:
    """The README's metrics table, generated here so that it cannot drift from the code."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for metric in SNAPSHOT_METRICS + EXPORTER_METRICS:
        labels = ", ".join(f"`{label}`" for label in metric.all_labels) or "—"
        rows.append(f"| `{metric.name}` | {metric.kind} | {labels} | {metric.help} |")
    return "\n".join(rows) + "\n"
