"""The HTTP app in process: the exporter's ASGI app over an account polling the simulator's app.

Both apps meet through ``httpx.ASGITransport``: the account's client asks the simulated API,
the test asks the exporter. One poll is driven by hand, the account's clock is a fake one, and
nothing sleeps or opens a socket.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import bcrypt
import httpx
import pytest
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.api.client import EvoticClient
from exporter.api.token import TokenSource
from exporter.exposition.own_metrics import AccountMetrics, process_registry
from exporter.polling.health import Health
from exporter.polling.poller import PollSettings
from exporter.runtime.logs import Redactor
from exporter.service.account import Account
from exporter.settings.accounts import DEFAULT_ACCOUNT
from exporter.web.app import SEND_SLICE, SEND_WHOLE, ExporterApp
from exporter.web.config import BasicAuth
from simulator import FaultSet, Fleet, SimulatorApp

SIM_TOKEN = "server-test-token-7d41"
T0 = 1_717_243_200.0  # 2024-06-01T12:00:00Z
VERSION = "9.8.7-test"
TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# What Prometheus sends by default (scrape_protocols), 2.x before and after 2.49, and 3.x.
PROMETHEUS_2_OLD = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,"
    "*/*;q=0.2"
)
MIB, GIB = 2**20, 2**30  # the API speaks MB and GB and means MiB and GiB
PLAIN = {"Accept-Encoding": "identity"}  # httpx asks for gzip unless told otherwise


class Clock:
    """The account's clock, moved by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _no_wait(seconds: float) -> None:
    return None


@dataclass
class Stack:
    fleet: Fleet
    faults: FaultSet
    clock: Clock
    account: Account
    app: ExporterApp
    http: httpx.AsyncClient

    async def poll(self) -> bool:
        return await self.account.poller.poll_once()

    async def scrape(self, **headers: str) -> httpx.Response:
        response = await self.http.get("/metrics", headers={**PLAIN, **headers})
        assert response.status_code == 200, response.text
        return response


@asynccontextmanager
async def stack(
    *,
    servers: int = 6,
    stale_after: float = 600.0,
    auth: BasicAuth | None = None,
    extra_headers: Mapping[str, str] | None = None,
    process: CollectorRegistry | None = None,
    account_type: type[Account] = Account,
) -> AsyncIterator[Stack]:
    fleet = Fleet(lambda: T0, servers=servers, seed=3)
    faults = FaultSet()
    simulator = SimulatorApp(fleet, faults, SIM_TOKEN)
    token = TokenSource(Redactor(), token=SIM_TOKEN)
    metrics = AccountMetrics()
    client = EvoticClient("http://simulator/api/v1", token, timeout=5, user_agent="test",
                          observe=metrics.request, transport=httpx.ASGITransport(app=simulator),
                          sleep=_no_wait)  # fmt: skip
    clock = Clock()
    account = account_type(client, token, PollSettings(stale_after=stale_after), metrics,
                           clock=clock)  # fmt: skip
    # An empty process registry by default: process_* values move between two scrapes.
    app = ExporterApp(lambda: {DEFAULT_ACCOUNT: account},
                      process if process is not None else CollectorRegistry(),
                      version=VERSION, extra_headers=extra_headers, auth=auth)  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as http:
        try:
            yield Stack(fleet, faults, clock, account, app, http)
        finally:
            await account.stop()


def run(scenario: Any) -> None:
    asyncio.run(scenario())


async def asgi(app: ExporterApp, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """Every message ``app`` sends for one request, as a server would receive them.

    httpx's ASGITransport drops a HEAD response's body itself, so what the app really sends
    is looked at here.
    """
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def request(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


Key = tuple[str, frozenset[tuple[str, str]]]


def samples(body: str) -> dict[Key, float]:
    """Every sample of a text-format body, by name and labels."""
    found: dict[Key, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"duplicate series {key}"
            found[key] = sample.value
    return found


def value(found: dict[Key, float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def server_series(found: dict[Key, float]) -> set[Key]:
    return {key for key in found if "server_id" in dict(key[1])}


# ------------------------------------------------------------------ the data


def test_per_server_series_match_the_simulated_fleet() -> None:
    async def scenario() -> None:
        async with stack(servers=8) as s:
            assert await s.poll()
            response = await s.scrape()
            assert response.headers["content-type"] == TEXT
            found = samples(response.text)
            truth = s.fleet.listing()
            assert len(truth) == 8
            assert value(found, "evotic_up") == 1
            assert value(found, "evotic_servers") == 8
            served = {dict(k[1])["server_id"] for k in server_series(found)}
            assert served == {str(record["id"]) for record in truth}
            checked = 0
            for record in truth:
                who = {"server_id": str(record["id"]), "hostname": record["hostname"]}
                spec = record["specifications"]
                assert value(found, "evotic_server_cpu_cores", **who) == spec["cpu"]
                assert value(found, "evotic_server_memory_bytes", **who) == spec["ram"] * MIB
                assert value(found, "evotic_server_disk_bytes", **who) == spec["disk"] * GIB
                running = 1.0 if record["status"] == "started" else 0.0
                assert value(found, "evotic_server_running", **who) == running
                status = {**who, "status": record["status"]}
                assert value(found, "evotic_server_status", **status) == 1
                usage = record["usage"]
                if usage is None:
                    continue
                checked += 1
                assert value(found, "evotic_server_cpu_usage_ratio", **who) == pytest.approx(
                    usage["cpu"] / 100
                )
                assert value(found, "evotic_server_memory_used_bytes", **who) == (
                    usage["ram"] * MIB
                )
                assert value(found, "evotic_server_disk_used_bytes", **who) == pytest.approx(
                    usage["disk"] * GIB
                )
                for direction in ("incoming", "outgoing"):
                    flow = usage["traffic"][direction]
                    series = {**who, "direction": direction}
                    traffic = value(found, "evotic_server_traffic_bytes_total", **series)
                    assert traffic == flow["value"]
                    previous = value(found, "evotic_server_traffic_previous_period_bytes", **series)
                    assert previous == flow["prev"]
            assert checked >= 3, "the fleet should report usage for most servers"

    run(scenario)


def test_own_metrics_follow_the_account_series() -> None:
    async def scenario() -> None:
        async with stack(process=process_registry(VERSION)) as s:
            assert await s.poll()
            found = samples((await s.scrape()).text)
            assert value(found, "evotic_exporter_build_info", version=VERSION) == 1
            assert value(found, "evotic_api_requests_total", endpoint="servers", code="200") == 1
            assert value(found, "evotic_last_successful_poll_timestamp_seconds") == T0
            assert any(name == "process_cpu_seconds_total" for name, _ in found)

    run(scenario)


# ------------------------------------------------------------------ content negotiation


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TEXT),
        ("", TEXT),
        ("application/openmetrics-text", OPENMETRICS),
        ("application/openmetrics-text; version=1.0.0", OPENMETRICS),
        ('application/openmetrics-text; version="1.0.0"', OPENMETRICS),
        ("application/openmetrics-text; version=0.0.1", TEXT),
        ("application/openmetrics-text; version=2.0.0", TEXT),
        ("application/openmetrics-text;version=2.0.0,application/openmetrics-text;q=0.5",
         OPENMETRICS),
        ("text/plain;q=0.9, application/openmetrics-text;q=0.3", TEXT),
        ("application/openmetrics-text;q=0.3, text/plain;q=0.9", TEXT),
        ("text/plain;q=0.3, application/openmetrics-text;q=0.9", OPENMETRICS),
        ("application/openmetrics-text;q=0", TEXT),
        ("application/openmetrics-text;q=0, */*", TEXT),
        ("application/openmetrics-text;q=zero", TEXT),
        ("application/json", TEXT),
        ("*/*", TEXT),
        (PROMETHEUS_2_OLD, OPENMETRICS),
        (PROMETHEUS_2, OPENMETRICS),
        (PROMETHEUS_3, OPENMETRICS),
    ],
)  # fmt: skip
def test_content_negotiation(accept: str | None, expected: str) -> None:
    async def scenario() -> None:
        async with stack() as s:
            assert await s.poll()
            headers = {} if accept is None else {"Accept": accept}
            response = await s.scrape(**headers)
            assert response.headers["content-type"] == expected
            assert response.headers["vary"] == "Accept, Accept-Encoding"
            body = response.text
            if expected == OPENMETRICS:
                assert body.endswith("\n# EOF\n")
                assert body.count("# EOF") == 1
                families = {f.name: f for f in openmetrics_families(body)}
                assert families["evotic_up"].samples[0].value == 1
                assert families["evotic_server_traffic_bytes"].type == "counter"
            else:
                assert "# EOF" not in body
                found = samples(body)
                assert value(found, "evotic_servers") == 6

    run(scenario)


async def _raw(http: httpx.AsyncClient, headers: dict[str, str]) -> tuple[httpx.Headers, bytes]:
    """The body as it came over the wire, before httpx would decode it."""
    async with http.stream("GET", "/metrics", headers=headers) as response:
        assert response.status_code == 200
        return response.headers, b"".join([chunk async for chunk in response.aiter_raw()])


@pytest.mark.parametrize("accept", ["text/plain", "application/openmetrics-text"])
def test_gzip_decompresses_to_the_plain_body(accept: str) -> None:
    async def scenario() -> None:
        async with stack() as s:
            assert await s.poll()
            plain_headers, plain = await _raw(s.http, {"Accept": accept, **PLAIN})
            assert "content-encoding" not in plain_headers
            zipped_headers, zipped = await _raw(
                s.http, {"Accept": accept, "Accept-Encoding": "gzip"}
            )
            assert zipped_headers["content-encoding"] == "gzip"
            assert zipped_headers["content-type"] == plain_headers["content-type"]
            assert int(zipped_headers["content-length"]) == len(zipped) < len(plain)
            assert gzip.decompress(zipped) == plain
            # A second scrape of the same snapshot is one valid stream too.
            _, again = await _raw(s.http, {"Accept": accept, "Accept-Encoding": "x-gzip"})
            assert gzip.decompress(again) == plain

    run(scenario)


@pytest.mark.parametrize(
    "encoding", ["gzip;q=0", "identity", "br", "deflate", "gzip;q=0, identity;q=0.5"]
)
def test_no_gzip_unless_asked_for(encoding: str) -> None:
    async def scenario() -> None:
        async with stack() as s:
            assert await s.poll()
            headers, body = await _raw(s.http, {"Accept-Encoding": encoding})
            assert "content-encoding" not in headers
            assert body.startswith(b"# HELP ")

    run(scenario)


def test_head_sends_the_headers_of_get_without_a_body() -> None:
    async def scenario() -> None:
        async with stack() as s:
            assert await s.poll()
            for path in ("/", "/metrics", "/healthz", "/readyz"):
                get = await s.http.get(path, headers=PLAIN)
                head = await s.http.head(path, headers=PLAIN)
                assert head.status_code == get.status_code, path
                assert head.content == b"", path
                assert head.headers["content-length"] == get.headers["content-length"], path
                assert int(get.headers["content-length"]) == len(get.content) > 0, path
                assert head.headers["content-type"] == get.headers["content-type"], path
                start, *bodies = await asgi(s.app, request("HEAD", path))
                assert start["status"] == get.status_code
                assert [message["body"] for message in bodies] == [b""], path

    run(scenario)


def test_a_large_body_goes_out_in_slices() -> None:
    async def scenario() -> None:
        async with stack(servers=2600) as s:
            assert await s.poll()
            start, *bodies = await asgi(s.app, request("GET", "/metrics"))
            length = int(dict(start["headers"])[b"content-length"])
            assert length > SEND_WHOLE
            pieces = [message["body"] for message in bodies]
            assert all(len(piece) <= SEND_SLICE for piece in pieces)
            assert [message["more_body"] for message in bodies] == [True] * (len(bodies) - 1) + [
                False
            ]
            body = b"".join(pieces)
            assert len(body) == length
            assert body == (await s.scrape()).content
            assert b"\nevotic_servers 2600.0\n" in body

    run(scenario)


# ------------------------------------------------------------------ routes and methods


def test_unknown_path_is_404_and_other_methods_405() -> None:
    async def scenario() -> None:
        async with stack() as s:
            missing = await s.http.get("/metrics/")
            assert missing.status_code == 404
            assert missing.text == "not found\n"
            for method in ("POST", "PUT", "DELETE", "OPTIONS"):
                response = await s.http.request(method, "/metrics")
                assert response.status_code == 405, method
                assert response.headers["allow"] == "GET, HEAD"
                assert response.text == "method not allowed\n"
            assert (await s.http.post("/nowhere")).status_code == 404

    run(scenario)


def test_non_http_scopes_get_no_answer() -> None:
    async def scenario() -> None:
        async with stack() as s:
            assert await asgi(s.app, {"type": "lifespan"}) == []

    run(scenario)


def test_landing_page_links_every_endpoint() -> None:
    async def scenario() -> None:
        async with stack() as s:
            response = await s.http.get("/")
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/html; charset=utf-8"
            page = response.text
            assert page.startswith("<!doctype html>")
            assert f"Version {VERSION}." in page
            for target in ("metrics", "healthz", "readyz"):
                assert f'<a href="{target}">' in page

    run(scenario)


# ------------------------------------------------------------------ basic auth and headers


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_guards_data_but_not_probes() -> None:
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(4))
    auth = BasicAuth({"prometheus": hashed})

    async def scenario() -> None:
        async with stack(auth=auth) as s:
            assert await s.poll()
            for path in ("/", "/metrics"):
                for headers in ({}, _basic("prometheus", "wrong"), _basic("nobody", "s3cret-pass"),
                                {"Authorization": "Bearer s3cret-pass"}):  # fmt: skip
                    response = await s.http.get(path, headers=headers)
                    assert response.status_code == 401, (path, headers)
                    challenge = response.headers["www-authenticate"]
                    assert challenge == 'Basic realm="evotic-exporter"'
                    assert response.text == "unauthorized\n"
                    assert "evotic_" not in response.text
                good = await s.http.get(path, headers=_basic("prometheus", "s3cret-pass"))
                assert good.status_code == 200, path
            metrics = await s.scrape(**_basic("prometheus", "s3cret-pass"))
            assert value(samples(metrics.text), "evotic_up") == 1
            # Probes carry no credentials.
            assert (await s.http.get("/readyz")).status_code == 200
            healthz = await s.http.get("/healthz")
            assert healthz.status_code == 503  # no poll loop in this test, but not 401
            assert "www-authenticate" not in healthz.headers

    run(scenario)


def test_extra_headers_on_every_response() -> None:
    extra = {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000"}

    async def scenario() -> None:
        async with stack(extra_headers=extra) as s:
            assert await s.poll()
            responses = [
                await s.http.get("/"),
                await s.scrape(),
                await s.scrape(**{"Accept-Encoding": "gzip"}),
                await s.http.get("/healthz"),
                await s.http.get("/readyz"),
                await s.http.head("/metrics"),
                await s.http.get("/missing"),
                await s.http.post("/metrics"),
            ]
            for response in responses:
                assert response.headers["x-frame-options"] == "deny", response.url
                assert response.headers["strict-transport-security"] == "max-age=31536000"

    run(scenario)


def test_a_reload_replaces_the_users_and_the_headers() -> None:
    first = BasicAuth({"prometheus": bcrypt.hashpw(b"old-pass", bcrypt.gensalt(4))})
    second = BasicAuth({"scraper": bcrypt.hashpw(b"new-pass", bcrypt.gensalt(4))})

    async def scenario() -> None:
        async with stack(auth=first, extra_headers={"X-Frame-Options": "deny"}) as s:
            assert await s.poll()
            before = await s.http.get("/metrics", headers=_basic("prometheus", "old-pass"))
            assert before.status_code == 200
            assert before.headers["x-frame-options"] == "deny"
            s.app.set_access(extra_headers={"X-Content-Type-Options": "nosniff"}, auth=second)
            old = await s.http.get("/metrics", headers=_basic("prometheus", "old-pass"))
            new = await s.http.get("/metrics", headers=_basic("scraper", "new-pass"))
            assert (old.status_code, new.status_code) == (401, 200)
            for response in (old, new):
                assert "x-frame-options" not in response.headers
                assert response.headers["x-content-type-options"] == "nosniff"
            s.app.set_access(extra_headers=None, auth=None)
            unguarded = await s.http.get("/metrics")
            assert unguarded.status_code == 200
            assert "x-content-type-options" not in unguarded.headers

    run(scenario)


# ------------------------------------------------------------------ readiness and failures


def test_readyz_503_before_the_first_poll_then_200() -> None:
    async def scenario() -> None:
        async with stack() as s:
            before = await s.http.get("/readyz")
            assert before.status_code == 503
            assert before.text == "first poll pending\n"
            found = samples((await s.scrape()).text)
            assert not server_series(found)
            assert value(found, "evotic_servers") == 0
            assert await s.poll()
            after = await s.http.get("/readyz")
            assert after.status_code == 200
            assert after.text == "ok\n"

    run(scenario)


def test_healthz_follows_the_poll_loop() -> None:
    async def scenario() -> None:
        async with stack() as s:
            down = await s.http.get("/healthz")
            assert (down.status_code, down.text) == (503, "poll loop is not running\n")
            s.account.start()
            try:
                up = await s.http.get("/healthz")
                assert (up.status_code, up.text) == (200, "ok\n")
            finally:
                await s.account.stop()
            assert (await s.http.get("/healthz")).status_code == 503

    run(scenario)


def test_stale_data_drops_server_series() -> None:
    async def scenario() -> None:
        async with stack(stale_after=120) as s:
            assert await s.poll()
            s.clock.now = T0 + 120
            fresh = samples((await s.scrape()).text)
            assert len(server_series(fresh)) > 0
            assert value(fresh, "evotic_up") == 1
            assert value(fresh, "evotic_servers") == 6
            assert (await s.http.get("/readyz")).status_code == 200
            s.clock.now = T0 + 121
            found = samples((await s.scrape()).text)
            assert not server_series(found)
            assert value(found, "evotic_servers") == 0
            # The last poll did succeed, but what it brought is no longer served (README).
            assert value(found, "evotic_up") == 0
            ready = await s.http.get("/readyz")
            assert ready.status_code == 503
            assert ready.text.startswith("data is stale: last successful poll 121 s ago")
            assert "limit 120 s" in ready.text
            # OpenMetrics without data is still one valid document.
            om = await s.scrape(Accept="application/openmetrics-text")
            assert om.text.count("# EOF") == 1
            assert {f.name for f in openmetrics_families(om.text)} >= {"evotic_up"}

    run(scenario)


def test_failed_poll_keeps_serving_the_last_good_series() -> None:
    async def scenario() -> None:
        async with stack() as s:
            assert await s.poll()
            good = samples((await s.scrape()).text)
            s.faults.add("server_error", scope="servers", status=503)
            assert not await s.poll()
            found = samples((await s.scrape()).text)
            assert value(found, "evotic_up") == 0
            assert value(found, "evotic_poll_errors_total", reason="server_error") == 1
            assert value(found, "evotic_poll_errors_total", reason="timeout") == 0
            assert value(found, "evotic_servers") == 6
            assert {k: good[k] for k in server_series(good)} == {
                k: found[k] for k in server_series(found)
            }
            # Three attempts, all answered 503.
            assert value(found, "evotic_api_requests_total", endpoint="servers", code="503") == 3
            ready = await s.http.get("/readyz")
            assert ready.status_code == 200  # still within stale_after
            s.faults.clear()
            assert await s.poll()
            assert value(samples((await s.scrape()).text), "evotic_up") == 1

    run(scenario)


def test_failing_from_the_start_says_why_on_readyz() -> None:
    async def scenario() -> None:
        async with stack() as s:
            s.faults.add("unauthorized", scope="servers")
            assert not await s.poll()
            found = samples((await s.scrape()).text)
            assert value(found, "evotic_up") == 0
            assert value(found, "evotic_poll_errors_total", reason="auth") == 1
            assert not server_series(found)
            ready = await s.http.get("/readyz")
            assert ready.status_code == 503
            assert ready.text == "no successful poll yet (last error: auth)\n"

    run(scenario)


class _BrokenAccount(Account):
    def health(self) -> Health:
        raise RuntimeError("the view is broken")


def test_a_route_that_raises_answers_500() -> None:
    async def scenario() -> None:
        async with stack(account_type=_BrokenAccount) as s:
            with structlog.testing.capture_logs() as logs:
                for path in ("/metrics", "/readyz"):
                    response = await s.http.get(path)
                    assert response.status_code == 500
                    assert response.text == "internal error\n"
                    assert "the view is broken" not in response.text
            failures = [log for log in logs if log["event"] == "request failed"]
            assert [log["path"] for log in failures] == ["/metrics", "/readyz"]
            assert all(log["log_level"] == "error" for log in failures)
            assert (await s.http.get("/")).status_code == 200

    run(scenario)
