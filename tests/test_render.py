"""The renderer: golden exposition files, and byte equality with prometheus_client."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.metrics import (
    SERVER_CPU_USAGE,
    SERVER_DISK_USED,
    SERVER_MEMORY_USED,
    SERVER_TRAFFIC,
    SERVER_TRAFFIC_EXCEEDED,
    SERVER_TRAFFIC_PREVIOUS,
    Format,
    render_families,
    server_samples,
    to_client_metrics,
)
from exporter.snapshot import Snapshot

from .conftest import GOLDEN


class _Families(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return to_client_metrics(server_samples(self._snapshot))


def _client_render(snapshot: Snapshot, fmt: Format) -> bytes:
    registry = CollectorRegistry()
    registry.register(_Families(snapshot))
    if fmt == "text":
        return generate_latest(registry)
    return openmetrics.generate_latest(registry).removesuffix(b"# EOF\n")


@pytest.mark.parametrize(
    ("fmt", "golden"), [("text", "servers.prom"), ("openmetrics", "servers.om")]
)
def test_render_matches_golden_file(sample_snapshot: Snapshot, fmt: Format, golden: str) -> None:
    rendered = render_families(server_samples(sample_snapshot), fmt)
    path = GOLDEN / golden
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rendered)
    assert rendered.decode() == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("fmt", ["text", "openmetrics"])
def test_fast_renderer_is_byte_identical_to_prometheus_client(
    sample_snapshot: Snapshot, fmt: Format
) -> None:
    assert render_families(server_samples(sample_snapshot), fmt) == _client_render(
        sample_snapshot, fmt
    )


def test_label_values_are_escaped_exactly_as_sent(sample_snapshot: Snapshot) -> None:
    text = render_families(server_samples(sample_snapshot), "text").decode()
    assert 'hostname="bücher \\"db\\" \\\\ primary\\nline"' in text
    assert 'hostname="サーバー-7"' in text


def test_server_without_usage_has_no_usage_series(sample_snapshot: Snapshot) -> None:
    families = server_samples(sample_snapshot)
    usage = (SERVER_CPU_USAGE, SERVER_MEMORY_USED, SERVER_DISK_USED, SERVER_TRAFFIC,
             SERVER_TRAFFIC_PREVIOUS, SERVER_TRAFFIC_EXCEEDED)  # fmt: skip
    for metric, samples in families.items():
        if metric in usage:
            assert all(labels[0] != "2" for labels, _ in samples), metric.name


def test_units_are_converted_to_base_units(sample_snapshot: Snapshot) -> None:
    families = {m.name: dict(samples) for m, samples in server_samples(sample_snapshot).items()}
    key = ("1", "srv-evotic")
    assert families["evotic_server_memory_bytes"][key] == 2048 * 2**20
    assert families["evotic_server_disk_bytes"][key] == 20 * 2**30
    assert families["evotic_server_cpu_usage_ratio"][key] == pytest.approx(0.125)
    assert families["evotic_server_memory_used_bytes"][key] == 1456 * 2**20
    assert families["evotic_server_disk_used_bytes"][key] == pytest.approx(17.1 * 2**30)
    assert families["evotic_server_created_timestamp_seconds"][key] == 1699035782.0
    assert families["evotic_server_traffic_bytes_total"][(*key, "incoming")] == 3930800510
    assert families["evotic_server_traffic_previous_period_bytes"][(*key, "outgoing")] == 158715701
    assert families["evotic_server_traffic_limit_exceeded"][(*key, "outgoing")] == 1.0
    assert families["evotic_server_progress_ratio"][(*key, "creating the backup")] == 0.53
    assert families["evotic_server_processing"][("3", "サーバー-7")] == 0.0
    assert families["evotic_server_traffic_quota_bytes"][(*key, "outgoing")] == 2**40
    assert (
        families["evotic_server_traffic_quota_bytes"][("3", "サーバー-7", "outgoing")] == 5 * 2**30
    )
    assert ("3", "サーバー-7", "incoming") not in families["evotic_server_traffic_quota_bytes"]
    assert families["evotic_server_running"] == {
        key: 1.0,
        ("2", 'bücher "db" \\ primary\nline'): 0.0,
        ("3", "サーバー-7"): 0.0,
    }
