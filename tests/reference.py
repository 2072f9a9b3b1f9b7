"""The reference renderer: every sample of a snapshot, rendered by prometheus_client itself.

It reads values through the same readers as the fast renderer (``MetricDef.value``, ``flow``,
``samples``, ``scalar``), so the two cannot disagree on a field or a unit; what the tests hold
the fast renderer to is prometheus_client's formatting, escaping and label order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.exposition.families import FLOWS, SNAPSHOT_METRICS, MetricDef, traffic_of
from exporter.exposition.render import Format
from exporter.polling.snapshot import Snapshot

# Label values in ``MetricDef.all_labels`` order, and the value.
LabelledSample = tuple[tuple[str, ...], float]


def _samples(metric: MetricDef, snapshot: Snapshot) -> list[LabelledSample]:
    if metric.scalar is not None:
        value = metric.scalar(snapshot)
        return [] if value is None else [((), value)]
    out: list[LabelledSample] = []
    for server in snapshot.servers:
        key = (server.id, server.hostname)
        if metric.value is not None:
            value = metric.value(server)
            if value is not None:
                out.append((key, value))
        elif metric.flow is not None:
            traffic = traffic_of(server)
            for direction, flow_of in FLOWS if traffic is not None else ():
                flow = flow_of(traffic)
                value = None if flow is None else metric.flow(flow)
                if value is not None:
                    out.append(((*key, direction), value))
        elif metric.samples is not None:
            out += [((*key, *labels), value) for labels, value in metric.samples(server, snapshot)]
    return out


def server_samples(snapshot: Snapshot) -> dict[MetricDef, list[LabelledSample]]:
    """Every sample of a snapshot, family by family. A server without usage data gets no
    usage or traffic samples (absent, not zero)."""
    return {metric: _samples(metric, snapshot) for metric in SNAPSHOT_METRICS}


def to_client_metrics(families: dict[MetricDef, list[LabelledSample]]) -> Iterator[Metric]:
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


class _Families(Collector):
    def __init__(self, families: dict[MetricDef, list[LabelledSample]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return to_client_metrics(self._families)


def render_families(families: dict[MetricDef, list[LabelledSample]], fmt: Format) -> bytes:
    """prometheus_client's text (0.0.4) or OpenMetrics 1.0 rendering, without ``# EOF``."""
    registry = CollectorRegistry()
    registry.register(_Families(families))
    if fmt == "text":
        return generate_latest(registry)
    return openmetrics.generate_latest(registry).removesuffix(b"# EOF\n")


def client_render(snapshot: Snapshot, fmt: Format) -> bytes:
    return render_families(server_samples(snapshot), fmt)
