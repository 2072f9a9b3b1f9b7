"""Every metric the exporter serves: name, type, help text, label names and how to read it.

This module is the one place that knows them. Each per-server family carries its value reader,
so the fast renderer (``render.py``), the prometheus_client reference renderer the tests
hold it to (``tests/reference.py``) and the README's metrics table all come from the same
definition. The exporter's own metrics are declared here too and kept by prometheus_client
(``own_metrics.py``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from exporter.api.models import Server, Traffic, TrafficDirection
from exporter.polling.snapshot import Snapshot

MIB = 2**20
GIB = 2**30
DIRECTIONS = ("incoming", "outgoing")
SERVER_LABELS = ("server_id", "hostname")

Kind = Literal["gauge", "counter", "histogram"]

# Label values besides ``server_id`` and ``hostname`` (in ``MetricDef.labels`` order), and value.
Sample = tuple[tuple[str, ...], float]


@dataclass(frozen=True)
class MetricDef:
    """One metric family as the public contract names it, and how its samples are read.

    ``name`` is the sample name in the Prometheus text format, so counters end in ``_total``.
    ``labels`` are the labels besides ``server_id`` and ``hostname`` on per-server metrics.
    A family read from a snapshot has exactly one reader:

    - ``value``: at most one sample per server, labelled with the server alone;
    - ``flow``: one sample per traffic direction the server reports (label ``direction``);
    - ``samples``: any number of samples per server, with the values of ``labels``;
    - ``scalar``: at most one unlabelled sample per snapshot.

    The exporter's own metrics have no reader: prometheus_client keeps their values.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    per_server: bool = True
    value: Callable[[Server], float | None] | None = None
    flow: Callable[[TrafficDirection], float | None] | None = None
    samples: Callable[[Server, Snapshot], Iterable[Sample]] | None = None
    scalar: Callable[[Snapshot], float | None] | None = None

    @property
    def all_labels(self) -> tuple[str, ...]:
        return (SERVER_LABELS + self.labels) if self.per_server else self.labels

    @property
    def family_name(self) -> str:
        """The family name OpenMetrics and prometheus_client use: counters lose ``_total``."""
        return self.name[: -len("_total")] if self.kind == "counter" else self.name


# --------------------------------------------------------------------------- value readers


def _running(server: Server) -> float | None:
    return 1.0 if server.status == "started" else 0.0


def _created(server: Server) -> float | None:
    return None if server.created_at is None else server.created_at.timestamp()


def _cores(server: Server) -> float | None:
    spec = server.specifications
    return None if spec is None else spec.cpu


def _memory(server: Server) -> float | None:
    spec = server.specifications
    return None if spec is None or spec.ram is None else spec.ram * MIB


def _disk(server: Server) -> float | None:
    spec = server.specifications
    return None if spec is None or spec.disk is None else spec.disk * GIB


def _cpu_used(server: Server) -> float | None:
    usage = server.usage
    return None if usage is None or usage.cpu is None else usage.cpu / 100.0


def _memory_used(server: Server) -> float | None:
    usage = server.usage
    return None if usage is None or usage.ram is None else usage.ram * MIB


def _disk_used(server: Server) -> float | None:
    usage = server.usage
    return None if usage is None or usage.disk is None else usage.disk * GIB


def _exceeded(flow: TrafficDirection) -> float | None:
    return None if flow.is_exceeded is None else (1.0 if flow.is_exceeded else 0.0)


def traffic_of(server: Server) -> Traffic | None:
    return None if server.usage is None else server.usage.traffic


# Each direction with how to read it, so that walking them allocates nothing.
FLOWS: tuple[tuple[str, Callable[[Traffic], TrafficDirection | None]], ...] = tuple(
    (direction, operator.attrgetter(direction)) for direction in DIRECTIONS
)


def _info(server: Server, snapshot: Snapshot) -> Iterable[Sample]:
    return (((server.uuid or "", server.node or "", server.os or ""), 1.0),)


def _status(server: Server, snapshot: Snapshot) -> Iterable[Sample]:
    return (((server.status or "unknown",), 1.0),)


def _quota(server: Server, snapshot: Snapshot) -> Iterable[Sample]:
    return [((direction,), size) for direction, size in snapshot.quotas.for_server(server).items()]


def _ips(server: Server, snapshot: Snapshot) -> Iterable[Sample]:
    return [
        ((address.ip, "true" if address.is_primary else "false", address.family), 1.0)
        for address in server.ip_addresses or ()
    ]


def _processing(server: Server, snapshot: Snapshot) -> Iterable[Sample]:
    task = snapshot.statuses.get(server.id)
    return () if task is None else (((), 1.0 if task.is_processing else 0.0),)


def _progress(server: Server, snapshot: Snapshot) -> Iterable[Sample]:
    task = snapshot.statuses.get(server.id)
    if task is None or not task.is_processing or task.progress is None:
        return ()
    return (((task.status or "unknown",), task.progress / 100.0),)


def _period_start(snapshot: Snapshot) -> float | None:
    return None if snapshot.period is None else snapshot.period[0]


def _period_end(snapshot: Snapshot) -> float | None:
    return None if snapshot.period is None else snapshot.period[1]


# --------------------------------------------------------------------------- per server

_REFRESH = " Refreshed every poll interval."
_STATUS_REFRESH = " Refreshed every status interval (--collector.status.interval)."

SERVER_INFO = MetricDef(
    "evotic_server_info", "gauge",
    "Server identity, always 1; labels uuid, node and os come from the API." + _REFRESH,
    ("uuid", "node", "os"), samples=_info,
)  # fmt: skip
SERVER_STATUS = MetricDef(
    "evotic_server_status", "gauge",
    "1 for the server's current status (field status); one series per server." + _REFRESH,
    ("status",), samples=_status,
)  # fmt: skip
SERVER_RUNNING = MetricDef(
    "evotic_server_running", "gauge",
    "1 when the server's status is started, else 0 (field status)." + _REFRESH,
    value=_running,
)  # fmt: skip
SERVER_CREATED = MetricDef(
    "evotic_server_created_timestamp_seconds", "gauge",
    "When the server was created, in Unix seconds (field created_at)." + _REFRESH,
    value=_created,
)  # fmt: skip
SERVER_CPU_CORES = MetricDef(
    "evotic_server_cpu_cores", "gauge",
    "Booked CPU cores (field specifications.cpu)." + _REFRESH,
    value=_cores,
)  # fmt: skip
SERVER_MEMORY = MetricDef(
    "evotic_server_memory_bytes", "gauge",
    "Booked memory in bytes (field specifications.ram, MB read as MiB)." + _REFRESH,
    value=_memory,
)  # fmt: skip
SERVER_DISK = MetricDef(
    "evotic_server_disk_bytes", "gauge",
    "Booked disk in bytes (field specifications.disk, GB read as GiB)." + _REFRESH,
    value=_disk,
)  # fmt: skip
SERVER_CPU_USAGE = MetricDef(
    "evotic_server_cpu_usage_ratio", "gauge",
    "CPU usage as a ratio, 1 = 100 % (field usage.cpu, percent / 100)." + _REFRESH,
    value=_cpu_used,
)  # fmt: skip
SERVER_MEMORY_USED = MetricDef(
    "evotic_server_memory_used_bytes", "gauge",
    "Memory in use in bytes (field usage.ram, MB read as MiB)." + _REFRESH,
    value=_memory_used,
)  # fmt: skip
SERVER_DISK_USED = MetricDef(
    "evotic_server_disk_used_bytes", "gauge",
    "Disk in use in bytes (field usage.disk, GB read as GiB)." + _REFRESH,
    value=_disk_used,
)  # fmt: skip
SERVER_TRAFFIC = MetricDef(
    "evotic_server_traffic_bytes_total", "counter",
    "Traffic in bytes in the current billing period, per direction; resets when a period "
    "starts (field usage.traffic.<direction>.value)." + _REFRESH,
    ("direction",), flow=operator.attrgetter("value"),
)  # fmt: skip
SERVER_TRAFFIC_PREVIOUS = MetricDef(
    "evotic_server_traffic_previous_period_bytes", "gauge",
    "Traffic in bytes in the previous billing period, per direction "
    "(field usage.traffic.<direction>.prev)." + _REFRESH,
    ("direction",), flow=operator.attrgetter("prev"),
)  # fmt: skip
SERVER_TRAFFIC_EXCEEDED = MetricDef(
    "evotic_server_traffic_limit_exceeded", "gauge",
    "1 when the API reports the traffic limit exceeded, per direction "
    "(field usage.traffic.<direction>.is_exceeded)." + _REFRESH,
    ("direction",), flow=_exceeded,
)  # fmt: skip
SERVER_TRAFFIC_QUOTA = MetricDef(
    "evotic_server_traffic_quota_bytes", "gauge",
    "Traffic included per billing period in bytes, per direction, where a quota is configured "
    "(EVOTIC_TRAFFIC_QUOTA_BYTES, EVOTIC_TRAFFIC_QUOTA_FILE)." + _REFRESH,
    ("direction",), samples=_quota,
)  # fmt: skip
SERVER_IP = MetricDef(
    "evotic_server_ip_address_info", "gauge",
    "One series per IP address of the server, always 1 (field ip_addresses)." + _REFRESH,
    ("ip", "primary", "family"), samples=_ips,
)  # fmt: skip
SERVER_PROCESSING = MetricDef(
    "evotic_server_processing", "gauge",
    "1 while the server runs a task (status endpoint field is_processing); "
    "only with --collector.status." + _STATUS_REFRESH,
    samples=_processing,
)  # fmt: skip
SERVER_PROGRESS = MetricDef(
    "evotic_server_progress_ratio", "gauge",
    "Progress of the running task as a ratio (status endpoint field progress / 100), "
    "label task from its field status; only while processing, with --collector.status."
    + _STATUS_REFRESH,
    ("task",), samples=_progress,
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
    per_server=False, scalar=_period_start,
)  # fmt: skip
PERIOD_END = MetricDef(
    "evotic_traffic_period_end_timestamp_seconds", "gauge",
    "End of the current billing period in Unix seconds (EVOTIC_TRAFFIC_PERIOD_START_DAY, UTC).",
    per_server=False, scalar=_period_end,
)  # fmt: skip

# Rendered from each snapshot, once.
SNAPSHOT_METRICS: tuple[MetricDef, ...] = (*SERVER_METRICS, PERIOD_START, PERIOD_END)

# --------------------------------------------------------------------------- the exporter's own

UP = MetricDef(
    "evotic_up",
    "gauge",
    "1 when the last poll of the API succeeded and its data is fresh (not older than "
    "--poll.stale-after), else 0.",
    per_server=False,
)
SERVERS = MetricDef(
    "evotic_servers", "gauge",
    "Servers exported with per-server series, those in evotic_servers_kept included; "
    "0 while no data is served (stale or not yet polled).",
    per_server=False,
)  # fmt: skip
SERVERS_REJECTED = MetricDef(
    "evotic_servers_rejected", "gauge",
    "Server records the last successful poll set aside, invalid or repeating an id. A repeated "
    "id's server is exported from its first record; an invalid record's server from its last "
    "valid record if the previous successful poll had one (evotic_servers_kept), else not at all.",
    per_server=False,
)  # fmt: skip
SERVERS_KEPT = MetricDef(
    "evotic_servers_kept", "gauge",
    "Servers among evotic_servers exported from their last valid record, because the last "
    "successful poll set their current record aside; 0 while no data is served.",
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
    "Seconds the last successful poll spent per phase (fetch, validate, status, render); "
    "validate is CPU seconds, fetch the rest of the listing's wall time.",
    ("phase",), per_server=False,
)  # fmt: skip
POLL_ERRORS = MetricDef(
    "evotic_poll_errors_total", "counter",
    "Failed polls by reason (auth, rate_limited, server_error, client_error, timeout, "
    "connection, invalid_response, token_file, internal).",
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
RATE_LIMIT = MetricDef(
    "evotic_api_rate_limit_requests", "gauge",
    "Requests allowed per rate limit window, as the API last stated it (X-RateLimit-Limit); "
    "absent until the API has sent it.",
    per_server=False,
)  # fmt: skip
RATE_REMAINING = MetricDef(
    "evotic_api_rate_limit_remaining_requests", "gauge",
    "Requests left in the current rate limit window, as the API last stated it "
    "(X-RateLimit-Remaining); absent until the API has sent it.",
    per_server=False,
)  # fmt: skip
RELOAD_OK = MetricDef(
    "evotic_config_last_reload_successful", "gauge",
    "1 when the last reload of the files (SIGHUP, POST /-/reload, renewed certificates) "
    "succeeded, 0 while the last one failed and the configuration before it is still in use.",
    per_server=False,
)  # fmt: skip
RELOAD_TIME = MetricDef(
    "evotic_config_last_reload_success_timestamp_seconds", "gauge",
    "When the files were last loaded successfully (at start-up or by a reload), in Unix seconds.",
    per_server=False,
)  # fmt: skip

EXPORTER_METRICS: tuple[MetricDef, ...] = (
    UP, SERVERS, SERVERS_REJECTED, SERVERS_KEPT, LAST_SUCCESS, POLL_DURATION, POLL_PHASE,
    POLL_ERRORS, API_REQUESTS, API_DURATION, RATE_LIMIT, RATE_REMAINING, BUILD_INFO, RELOAD_OK,
    RELOAD_TIME,
)  # fmt: skip

REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def markdown_table() -> str:
    """The README's metrics table, generated here so that it cannot drift from the code."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for metric in SNAPSHOT_METRICS + EXPORTER_METRICS:
        labels = ", ".join(f"`{label}`" for label in metric.all_labels) or "—"
        rows.append(f"| `{metric.name}` | {metric.kind} | {labels} | {metric.help} |")
    return "\n".join(rows) + "\n"
