"""The exporter's own metrics, as prometheus_client renders them from what the parts report.

The families are read back with prometheus_client's parser and held to their declarations in
``exporter/exposition/families.py``. The outcomes come from real polls of the simulator's
app, and from
``Outcome`` values where a particular failure is wanted.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.api.client import EvoticClient
from exporter.api.errors import POLL_REASONS
from exporter.api.models import Server
from exporter.api.token import TokenSource
from exporter.exposition.families import (
    API_DURATION,
    BUILD_INFO,
    EXPORTER_METRICS,
    LAST_SUCCESS,
    POLL_DURATION,
    RELOAD_OK,
    RELOAD_TIME,
    REQUEST_BUCKETS,
    MetricDef,
)
from exporter.exposition.own_metrics import (
    AccountMetrics,
    LabelledAccounts,
    ReloadMetrics,
    process_registry,
    render_registry,
)
from exporter.polling.health import Health
from exporter.polling.poller import PollSettings
from exporter.polling.snapshot import Outcome, Snapshot
from exporter.runtime.logs import Redactor
from exporter.service.account import Account
from exporter.web.app import scraped
from simulator import FaultSet, Fleet, SimulatorApp

T0 = 1_717_243_200.0
TOKEN = "own-metrics-token-3c9e"


def families_of(registry: CollectorRegistry) -> dict[str, Metric]:
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def families(metrics: AccountMetrics) -> dict[str, Metric]:
    return families_of(metrics.registry)


def sample_names(metrics: AccountMetrics) -> list[str]:
    return [s.name for family in families(metrics).values() for s in family.samples]


def value(metrics: AccountMetrics, name: str, **labels: str) -> float:
    found = [
        s.value
        for family in families(metrics).values()
        for s in family.samples
        if s.name == name and s.labels == labels
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def _check_declared(family: Metric, metric: MetricDef) -> None:
    assert family.name == metric.family_name
    assert family.type == metric.kind
    assert family.documentation == metric.help
    for sample in family.samples:
        labels = set(sample.labels) - ({"le"} if metric.kind == "histogram" else set())
        assert labels == set(metric.labels), (metric.name, sample)


async def _no_wait(seconds: float) -> None:
    return None


def _polled(
    faults: FaultSet | None = None, polls: int = 1, *, sweep_first: bool = False
) -> AccountMetrics:
    """The metrics of an account after ``polls`` real polls of the simulator's app (after a
    poll and a status sweep, with ``sweep_first``)."""
    metrics = AccountMetrics()

    async def scenario() -> None:
        app = SimulatorApp(Fleet(lambda: T0, servers=4, seed=5), faults or FaultSet(), TOKEN)
        token = TokenSource(Redactor(), token=TOKEN)
        client = EvoticClient("http://simulator/api/v1", token, timeout=5, user_agent="t",
                              observe=metrics.request, transport=httpx.ASGITransport(app=app),
                              sleep=_no_wait)  # fmt: skip
        settings = PollSettings(collect_status=sweep_first)
        account = Account(client, token, settings, metrics, clock=lambda: T0)
        if sweep_first:
            await account.poller.poll_once()
            await account.poller.sweep_statuses()
        for _ in range(polls):
            await account.poller.poll_once()
        scraped(account)
        await account.stop()

    asyncio.run(scenario())
    return metrics


def test_every_family_is_declared_in_metrics_py() -> None:
    metrics = _polled()
    metrics.phase("render", 0.25)
    metrics.rate_limit(60, 42)  # shown once the API has stated a rate limit
    found = families(metrics)
    process_wide = (BUILD_INFO, RELOAD_OK, RELOAD_TIME)
    declared = {m.family_name: m for m in EXPORTER_METRICS if m not in process_wide}
    assert set(found) == set(declared)
    for name, family in found.items():
        _check_declared(family, declared[name])


def test_build_info_and_process_metrics() -> None:
    registry = process_registry("1.2.3")
    text = generate_latest(registry).decode()
    found = {family.name: family for family in text_string_to_metric_families(text)}
    _check_declared(found[BUILD_INFO.family_name], BUILD_INFO)
    [build] = found[BUILD_INFO.family_name].samples
    assert (build.labels, build.value) == ({"version": "1.2.3"}, 1.0)
    assert found["process_resident_memory_bytes"].samples[0].value > 0


def test_no_created_series() -> None:
    metrics = _polled()
    names = sample_names(metrics)
    assert "evotic_poll_errors_total" in names
    assert "evotic_api_request_duration_seconds_count" in names
    assert not [name for name in names if name.endswith("_created")]


def test_every_poll_error_reason_is_present_at_zero_from_the_start() -> None:
    metrics = AccountMetrics()
    family = families(metrics)["evotic_poll_errors"]
    assert {s.name for s in family.samples} == {"evotic_poll_errors_total"}
    assert {s.labels["reason"]: s.value for s in family.samples} == dict.fromkeys(POLL_REASONS, 0.0)


def test_a_failed_poll_counts_its_reason_and_sets_up_to_zero() -> None:
    faults = FaultSet()
    faults.add("html_200", scope="servers")
    metrics = _polled(faults, polls=2)
    assert value(metrics, "evotic_up") == 0
    assert value(metrics, "evotic_poll_errors_total", reason="invalid_response") == 2
    others = [r for r in POLL_REASONS if r != "invalid_response"]
    assert all(value(metrics, "evotic_poll_errors_total", reason=r) == 0 for r in others)
    assert value(metrics, "evotic_servers") == 0
    assert value(metrics, "evotic_api_requests_total", endpoint="servers", code="200") == 2


def test_timestamp_and_duration_are_absent_until_there_is_a_value() -> None:
    metrics = AccountMetrics()
    names = sample_names(metrics)
    assert LAST_SUCCESS.name not in names
    assert POLL_DURATION.name not in names

    metrics.poll_finished(Outcome(T0, 1.5, reason="timeout", message="too slow"), None)
    names = sample_names(metrics)
    assert LAST_SUCCESS.name not in names, "no successful poll yet"
    assert value(metrics, POLL_DURATION.name) == 1.5

    snapshot = Snapshot(servers=(), taken_at=T0 + 60, rejected=3)
    phases = (("fetch", 0.4), ("validate", 0.1))
    metrics.poll_finished(Outcome(T0 + 60, 0.5, phases=phases), snapshot)
    metrics.poll_finished(Outcome(T0 + 120, 0.25, phases=phases), snapshot)
    assert value(metrics, LAST_SUCCESS.name) == T0 + 120
    assert value(metrics, POLL_DURATION.name) == 0.25
    assert value(metrics, "evotic_servers_rejected") == 3
    phase = "evotic_poll_phase_duration_seconds"
    assert value(metrics, phase, phase="fetch") == 0.4
    assert value(metrics, phase, phase="validate") == 0.1

    # A later failure keeps the time of the last success.
    metrics.poll_finished(Outcome(T0 + 180, 2.0, reason="connection"), None)
    assert value(metrics, LAST_SUCCESS.name) == T0 + 120
    assert value(metrics, "evotic_poll_errors_total", reason="connection") == 1


def test_a_real_poll_reports_its_figures() -> None:
    metrics = _polled()
    assert value(metrics, "evotic_up") == 1
    assert value(metrics, "evotic_servers") == 4
    assert value(metrics, "evotic_servers_rejected") == 0
    assert value(metrics, LAST_SUCCESS.name) == T0
    assert value(metrics, POLL_DURATION.name) > 0
    phase = "evotic_poll_phase_duration_seconds"
    assert value(metrics, phase, phase="fetch") >= 0
    assert value(metrics, phase, phase="validate") >= 0
    assert value(metrics, phase, phase="render") >= 0
    assert value(metrics, "evotic_api_requests_total", endpoint="servers", code="200") == 1
    count = "evotic_api_request_duration_seconds_count"
    assert value(metrics, count, endpoint="servers") == 1


def test_request_histogram_buckets() -> None:
    metrics = AccountMetrics()
    for seconds in (0.01, 0.07, 0.3, 3.0, 45.0):
        metrics.request("servers", "200", seconds)
    metrics.request("server_status", "timeout", 10.0)
    [family] = [f for f in families(metrics).values() if f.name == API_DURATION.family_name]
    buckets = {
        float(s.labels["le"]): s.value
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels["endpoint"] == "servers"
    }
    assert list(buckets) == [*REQUEST_BUCKETS, float("inf")]
    expected = {0.05: 1, 0.1: 2, 0.25: 2, 0.5: 3, 1.0: 3, 2.5: 3, 5.0: 4, 10.0: 4, 30.0: 4}
    assert buckets == {**expected, float("inf"): 5}
    total = "evotic_api_request_duration_seconds_sum"
    assert value(metrics, total, endpoint="servers") == pytest.approx(48.38)
    assert value(metrics, "evotic_api_request_duration_seconds_bucket", endpoint="server_status",
                 le="10.0") == 1  # fmt: skip
    requests = "evotic_api_requests_total"
    assert value(metrics, requests, endpoint="servers", code="200") == 5
    assert value(metrics, requests, endpoint="server_status", code="timeout") == 1


def _servers(count: int) -> tuple[Server, ...]:
    return tuple(Server(id=str(n), hostname=f"h{n}") for n in range(count))


def test_serving_reports_what_the_scrape_serves() -> None:
    metrics = AccountMetrics()
    counts = ("evotic_up", "evotic_servers", "evotic_servers_kept")
    assert tuple(value(metrics, name) for name in counts) == (0, 0, 0)
    snapshot = Snapshot(servers=_servers(12), taken_at=T0, kept=3)
    metrics.serving(Health(True, "ok", snapshot, up=True))
    assert tuple(value(metrics, name) for name in counts) == (1, 12, 3)
    metrics.serving(Health(True, "ok", snapshot, up=False))  # a failed poll, fresh data
    assert tuple(value(metrics, name) for name in counts) == (0, 12, 3)
    metrics.serving(Health(False, "data is stale", None))
    assert tuple(value(metrics, name) for name in counts) == (0, 0, 0)


def test_the_rendering_follows_every_change_and_is_reused_until_one() -> None:
    metrics = AccountMetrics()
    snapshot = Snapshot(servers=_servers(4), taken_at=T0)

    def check(changed: bool) -> None:
        for fmt in ("text", "openmetrics"):
            body = metrics.rendered(fmt)
            assert body == render_registry(metrics.registry, fmt)  # never stale
            assert (body is not seen[fmt]) == changed
            seen[fmt] = body

    seen = {fmt: metrics.rendered(fmt) for fmt in ("text", "openmetrics")}
    check(changed=False)
    metrics.serving(Health(True, "ok", snapshot, up=True))
    check(changed=True)
    metrics.serving(Health(True, "ok", snapshot, up=True))  # what most scrapes see
    check(changed=False)
    metrics.serving(Health(True, "ok", snapshot, up=False))
    check(changed=True)
    metrics.request("servers", "200", 0.05)
    check(changed=True)
    metrics.poll_finished(Outcome(T0, 1.0, phases=(("fetch", 0.5),)), snapshot)
    check(changed=True)
    metrics.phase("render", 0.01)
    check(changed=True)
    metrics.rate_limit(60, 59)
    check(changed=True)
    assert value(metrics, "evotic_api_rate_limit_remaining_requests") == 59
    assert b"evotic_api_rate_limit_remaining_requests 59.0" in metrics.rendered("text")


def test_each_account_has_a_registry_of_its_own() -> None:
    first, second = AccountMetrics(), AccountMetrics()
    first.serving(Health(True, "ok", Snapshot(servers=_servers(5), taken_at=T0), up=True))
    first.poll_finished(Outcome(T0, 1.0), Snapshot(servers=(), taken_at=T0))
    assert value(second, "evotic_servers") == 0
    assert LAST_SUCCESS.name not in sample_names(second)


def test_help_texts_name_every_poll_error_reason_and_the_status_interval() -> None:
    from exporter.api.errors import POLL_REASONS
    from exporter.exposition.families import POLL_ERRORS, SERVER_PROCESSING, SERVER_PROGRESS

    for reason in POLL_REASONS:
        assert reason in POLL_ERRORS.help, reason
    for family in (SERVER_PROCESSING, SERVER_PROGRESS):
        assert "status interval" in family.help
        assert "poll interval" not in family.help


def test_reload_metrics_say_whether_the_last_load_worked_and_when_the_last_good_one_was() -> None:
    registry = CollectorRegistry()
    now = [1000.0]
    reloads = ReloadMetrics(registry, lambda: now[0])
    reloads.loaded(True)
    now[0] = 2000.0
    reloads.loaded(False)
    found = families_of(registry)
    _check_declared(found[RELOAD_OK.family_name], RELOAD_OK)
    _check_declared(found[RELOAD_TIME.family_name], RELOAD_TIME)
    assert found[RELOAD_OK.family_name].samples[0].value == 0.0
    assert found[RELOAD_TIME.family_name].samples[0].value == 1000.0  # the last good load
    now[0] = 3000.0
    reloads.loaded(True)
    found = families_of(registry)
    assert found[RELOAD_OK.family_name].samples[0].value == 1.0
    assert found[RELOAD_TIME.family_name].samples[0].value == 3000.0


def test_labelled_accounts_put_every_account_in_one_family_with_its_name() -> None:
    prod, staging = _polled(), AccountMetrics()
    staging.request("servers", "401", 0.2)
    accounts = {"prod": prod, "staging": staging}
    registry = CollectorRegistry()
    registry.register(LabelledAccounts(lambda: accounts))
    found = families_of(registry)
    requests = found["evotic_api_requests"]
    by_account = {(s.labels["account"], s.labels["code"]) for s in requests.samples
                  if s.name == "evotic_api_requests_total"}  # fmt: skip
    assert ("staging", "401") in by_account
    assert any(account == "prod" for account, _ in by_account)
    text = generate_latest(registry).decode()
    assert text.count("# TYPE evotic_api_requests_total counter") == 1
    assert all('account="' in line for line in text.splitlines() if not line.startswith("#"))
    del accounts["prod"]
    assert 'account="prod"' not in generate_latest(registry).decode()


def test_the_status_phase_keeps_the_last_sweeps_figure_across_polls() -> None:
    # A series must not flicker: the polls after a sweep leave its figure in place.
    metrics = _polled(polls=3, sweep_first=True)
    phases = {s.labels["phase"] for s in families(metrics)["evotic_poll_phase_duration_seconds"]
              .samples}  # fmt: skip
    assert "status" in phases
    assert {"fetch", "validate"} <= phases
