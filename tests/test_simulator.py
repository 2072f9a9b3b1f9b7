"""The simulated Evotic API over real HTTP: shape, auth, pages, traffic, churn, faults, controls."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator import (
    FAULT_KINDS,
    Fleet,
    RunningSimulator,
    SimulatorOptions,
    start_simulator,
)
from simulator.cli import main as simulator_main

TOKEN = "test-token-5f1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MID_MAY = datetime(2024, 5, 15, 12, 0, tzinfo=UTC).timestamp()
DOC_NETWORKS = [
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
]
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z$")
ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = MID_MAY) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def serve(
    clock: Callable[[], float] | None = None, **options: Any
) -> AsyncIterator[tuple[RunningSimulator, httpx.AsyncClient]]:
    simulator = await start_simulator(SimulatorOptions(token=TOKEN, **options), clock=clock)
    try:
        async with httpx.AsyncClient(headers=AUTH, timeout=10) as client:
            yield simulator, client
    finally:
        await simulator.stop()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def add_fault(sim: RunningSimulator, client: httpx.AsyncClient, **body: Any) -> Any:
    response = await client.post(f"{sim.control_url}/faults", json=body)
    assert response.status_code == 201, response.text
    return response.json()


# -- the API ---------------------------------------------------------------------------------


def test_every_api_endpoint_requires_the_bearer_token() -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            server_id = sim.fleet.ids()[0]
            paths = ["servers", f"servers/{server_id}", f"servers/{server_id}/status"]
            for path in paths:
                url = f"{sim.url}/{path}"
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN},
                ):
                    response = await client.get(url, headers={"Authorization": "", **headers})
                    assert response.status_code == 401, (path, headers)
                    assert response.json() == {"message": "Unauthenticated."}
                assert (await client.get(url)).status_code == 200
                lower = await client.get(url, headers={"Authorization": f"bearer {TOKEN}"})
                assert lower.status_code == 200

    run(scenario)


def test_bare_listing_has_every_documented_field_with_its_type() -> None:
    async def scenario() -> None:
        async with serve(FakeClock()) as (sim, client):
            response = await client.get(f"{sim.url}/servers")
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            servers = response.json()
            assert isinstance(servers, list)
            assert len(servers) == 25
            for server in servers:
                check_server_shape(server)
            ids = [server["id"] for server in servers]
            assert ids == sorted(set(ids))
            statuses = {server["status"] for server in servers}
            assert {"started", "stopped", "installing"} <= statuses
            for server in servers:
                if server["status"] == "installing":
                    assert server["usage"] is None
            hostnames = {server["hostname"] for server in servers}
            assert any(not hostname.isascii() for hostname in hostnames)
            assert len(hostnames) == 25

    run(scenario)


def check_server_shape(server: dict[str, Any]) -> None:
    expected_keys = {
        "id", "hostname", "uuid", "status", "node", "os", "specifications", "ip_addresses",
        "usage", "created_at",
    }  # fmt: skip
    assert set(server) == expected_keys
    assert isinstance(server["id"], int)
    assert server["id"] > 0
    for key in ("hostname", "uuid", "status", "node", "os"):
        assert isinstance(server[key], str)
        assert server[key]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        server["uuid"])  # fmt: skip
    assert re.fullmatch(r"srv-compute-0[1-7]", server["node"])
    specs = server["specifications"]
    assert set(specs) == {"cpu", "ram", "disk"}
    assert all(type(specs[key]) is int for key in specs)
    assert (specs["cpu"], specs["ram"], specs["disk"]) in {
        (1, 2048, 20), (2, 4096, 40), (4, 8192, 80), (8, 16384, 160), (16, 32768, 320),
    }  # fmt: skip
    primaries = [entry for entry in server["ip_addresses"] if entry["is_primary"]]
    assert len(primaries) <= 1
    if server["ip_addresses"]:
        assert len(primaries) == 1
        assert ipaddress.ip_address(primaries[0]["ip"]).version == 4
    for entry in server["ip_addresses"]:
        assert set(entry) == {"ip", "is_primary"}
        assert type(entry["is_primary"]) is bool
        address = ipaddress.ip_address(entry["ip"])
        assert any(address in network for network in DOC_NETWORKS), address
    assert CREATED_AT.match(server["created_at"])
    usage = server["usage"]
    if usage is None:
        return
    assert set(usage) == {"cpu", "disk", "ram", "traffic"}
    assert type(usage["cpu"]) is float
    assert 0.0 <= usage["cpu"] <= 100.0
    assert type(usage["disk"]) is float
    assert 0.0 <= usage["disk"] <= specs["disk"]
    assert type(usage["ram"]) is int
    assert 0 <= usage["ram"] <= specs["ram"]
    if server["status"] != "started":
        assert usage["cpu"] == 0.0
    assert set(usage["traffic"]) == {"incoming", "outgoing"}
    for counter in usage["traffic"].values():
        assert set(counter) == {"value", "prev", "is_exceeded"}
        assert type(counter["value"]) is int
        assert type(counter["prev"]) is int
        assert type(counter["is_exceeded"]) is bool
        assert counter["value"] >= 0
        assert counter["prev"] >= 0


def test_one_server_matches_its_listing_entry_and_unknown_ids_are_404() -> None:
    async def scenario() -> None:
        async with serve(FakeClock()) as (sim, client):
            listing = (await client.get(f"{sim.url}/servers")).json()
            for server in listing[:5]:
                response = await client.get(f"{sim.url}/servers/{server['id']}")
                assert response.status_code == 200
                assert response.json() == server
            for bad in ("99999", "abc", "-1", "1.5", "\uff11\uff12"):
                response = await client.get(f"{sim.url}/servers/{bad}")
                assert response.status_code == 404, bad
                assert response.json() == {"message": "Server not found"}
                response = await client.get(f"{sim.url}/servers/{bad}/status")
                assert response.status_code == 404, bad
                assert response.json() == {"message": "Server not found"}

    run(scenario)


def test_status_endpoint_reports_tasks_whose_progress_advances() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with serve(clock) as (sim, client):
            ids = sim.fleet.ids()
            for server_id in ids:
                body = (await client.get(f"{sim.url}/servers/{server_id}/status")).json()
                assert set(body) == {"status", "real_status", "is_processing", "progress"}
                assert body["real_status"] in {"started", "stopped"}
                assert type(body["is_processing"]) is bool
                assert type(body["progress"]) is int
                assert 0 <= body["progress"] <= 100
                if not body["is_processing"]:
                    assert body["status"] == sim.fleet.server(server_id)["status"]
                    assert body["progress"] in (0, 100)

            # Find a server busy with a backup, reinstall, resize or restore within two hours.
            def busy_with_a_task(server_id: int) -> bool:
                body = sim.fleet.status(server_id)
                return bool(
                    body["is_processing"]
                    and body["status"] != "installing"
                    and body["progress"] < 80
                )

            busy = None
            for _ in range(240):
                busy = next((i for i in ids if busy_with_a_task(i)), None)
                if busy is not None:
                    break
                clock.now += 30
            assert busy is not None
            first = (await client.get(f"{sim.url}/servers/{busy}/status")).json()
            assert first["status"] in {
                "creating the backup", "reinstalling", "resizing", "restoring the backup",
            }  # fmt: skip
            assert first["real_status"] == "started"
            clock.now += 10
            second = (await client.get(f"{sim.url}/servers/{busy}/status")).json()
            assert second["status"] == first["status"]
            assert second["progress"] > first["progress"]

    run(scenario)


def test_unknown_paths_are_404_and_wrong_methods_405() -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            for path in ("/", "/api/v1", "/api/v1/servers/", "/api/v1/nope", "/api/v2/servers"):
                response = await client.get(f"http://127.0.0.1:{sim.port}{path}")
                assert response.status_code == 404, path
                assert "message" in response.json()
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                response = await client.request(method, f"{sim.url}/servers")
                assert response.status_code == 405
                assert response.headers["allow"] == "GET, HEAD"
                assert "message" in response.json()
            head = await client.head(f"{sim.url}/servers")
            assert head.status_code == 200
            assert head.content == b""

    run(scenario)


# -- pagination ------------------------------------------------------------------------------


def test_paginated_listing_walks_every_page_and_yields_each_server_once() -> None:
    async def scenario() -> None:
        async with serve(FakeClock(), paginate=True, per_page=7, servers=30) as (sim, client):
            url: str | None = f"{sim.url}/servers"
            seen: list[int] = []
            pages = 0
            while url is not None:
                body = (await client.get(url)).json()
                assert set(body) == {"data", "links", "meta"}
                pages += 1
                meta = body["meta"]
                assert meta["current_page"] == pages
                assert meta["per_page"] == 7
                assert meta["total"] == 30
                assert meta["last_page"] == 5
                assert len(body["data"]) == (7 if pages < 5 else 2)
                for server in body["data"]:
                    check_server_shape(server)
                seen += [server["id"] for server in body["data"]]
                links = body["links"]
                assert links["first"] == f"{sim.url}/servers?page=1&per_page=7"
                assert links["last"] == f"{sim.url}/servers?page=5&per_page=7"
                assert (links["prev"] is None) == (pages == 1)
                url = links["next"]
            assert pages == 5
            assert seen == sim.fleet.ids()
            assert len(set(seen)) == 30

    run(scenario)


def test_page_parameters_switch_pagination_on_and_are_clamped() -> None:
    async def scenario() -> None:
        async with serve(FakeClock(), servers=30) as (sim, client):
            bare = (await client.get(f"{sim.url}/servers")).json()
            assert isinstance(bare, list)
            paged = (await client.get(f"{sim.url}/servers", params={"page": "2"})).json()
            assert paged["meta"]["per_page"] == 100
            assert paged["meta"]["current_page"] == 2
            assert paged["data"] == []
            assert paged["links"]["next"] is None
            assert paged["links"]["prev"] == f"{sim.url}/servers?page=1&per_page=100"
            capped = await client.get(f"{sim.url}/servers", params={"per_page": "5000"})
            assert capped.json()["meta"]["per_page"] == 1000
            assert capped.json()["data"] == bare
            junk = await client.get(f"{sim.url}/servers", params={"page": "x", "per_page": "-3"})
            assert junk.json()["meta"]["current_page"] == 1
            assert junk.json()["meta"]["per_page"] == 1
            assert junk.json()["meta"]["last_page"] == 30

    run(scenario)


# -- traffic ---------------------------------------------------------------------------------


def test_traffic_grows_within_a_billing_period_and_resets_at_the_next() -> None:
    async def scenario() -> None:
        clock = FakeClock(datetime(2024, 5, 1, 0, 0, 30, tzinfo=UTC).timestamp())
        async with serve(clock) as (sim, client):

            async def counters() -> dict[tuple[int, str], tuple[int, int]]:
                listing = (await client.get(f"{sim.url}/servers")).json()
                return {
                    (server["id"], direction): (counter["value"], counter["prev"])
                    for server in listing
                    if server["usage"] is not None
                    for direction, counter in server["usage"]["traffic"].items()
                }

            history = [await counters()]
            for step in (1, 60, 3600, 86400, 10 * 86400, 19 * 86400):
                clock.now += step
                history.append(await counters())
            end_of_may = datetime(2024, 5, 31, 23, 59, 59, tzinfo=UTC).timestamp()
            clock.now = end_of_may
            history.append(await counters())
            for earlier, later in itertools.pairwise(history):
                for key, (value, prev) in later.items():
                    assert value >= earlier[key][0], key
                    assert prev == earlier[key][1], key
            grown = sum(history[-1][key][0] > history[0][key][0] for key in history[0])
            assert grown >= len(history[0]) // 2

            clock.now = end_of_may + 2
            june = await counters()
            for key, (value, prev) in june.items():
                may_value = history[-1][key][0]
                assert value < may_value or may_value == 0, key
                assert value < 2**40
                assert prev == history[-1][key][1]

    run(scenario)


def test_is_exceeded_agrees_with_each_servers_traffic_limit() -> None:
    async def scenario() -> None:
        async with serve(FakeClock()) as (sim, client):
            listing = (await client.get(f"{sim.url}/servers")).json()
            state = (await client.get(f"{sim.control_url}/state")).json()
            truth = {server["id"]: server for server in state["servers"]}
            exceeded = 0
            for server in listing:
                if server["usage"] is None:
                    continue
                for direction, counter in server["usage"]["traffic"].items():
                    limit = sim.fleet.traffic_limit_bytes(server["id"], direction)
                    assert limit in {2 * 2**40, 5 * 2**40, 10 * 2**40, 20 * 2**40}
                    assert counter["is_exceeded"] == (counter["value"] > limit)
                    assert truth[server["id"]]["traffic"][direction] == {
                        "value": counter["value"],
                        "prev": counter["prev"],
                        "limit_bytes": limit,
                        "is_exceeded": counter["is_exceeded"],
                    }
                exceeded += any(c["is_exceeded"] for c in server["usage"]["traffic"].values())
            assert 2 <= exceeded <= 5

    run(scenario)


# -- churn -----------------------------------------------------------------------------------


def test_churn_deletes_creates_and_renames_one_server_per_interval() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with serve(clock, churn_interval=60) as (sim, client):

            async def hostnames() -> dict[int, str]:
                listing = (await client.get(f"{sim.url}/servers")).json()
                return {server["id"]: server["hostname"] for server in listing}

            before = await hostnames()
            clock.now += 59
            assert await hostnames() == before
            clock.now += 1
            after = await hostnames()
            assert len(after) == len(before)
            deleted = set(before) - set(after)
            created = set(after) - set(before)
            assert len(deleted) == 1
            assert len(created) == 1
            assert created.pop() > max(before)
            renamed = [i for i in set(before) & set(after) if before[i] != after[i]]
            assert len(renamed) == 1

            new_id = max(after)
            new_server = (await client.get(f"{sim.url}/servers/{new_id}")).json()
            assert new_server["status"] == "installing"
            assert new_server["usage"] is None
            clock.now += 30
            new_server = (await client.get(f"{sim.url}/servers/{new_id}")).json()
            assert new_server["status"] == "started"
            assert new_server["usage"] is not None
            assert new_server["ip_addresses"]

            seen_ids = set(after) | set(before)
            for _ in range(10):
                highest = max(seen_ids)
                clock.now += 60
                current = await hostnames()
                fresh = set(current) - seen_ids
                assert len(fresh) == 1
                assert min(fresh) > highest
                seen_ids |= set(current)
            state = (await client.get(f"{sim.control_url}/state")).json()
            assert state["churn_steps"] == 11

    run(scenario)


def test_no_churn_by_default() -> None:
    clock = FakeClock()
    fleet = Fleet(clock)
    ids = fleet.ids()
    clock.now += 365 * 86400
    assert fleet.ids() == ids


# -- faults ----------------------------------------------------------------------------------


def test_server_error_fault_answers_5xx_until_its_count_runs_out() -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            fault = await add_fault(sim, client, kind="server_error", count=2)
            assert fault == {
                "id": fault["id"], "kind": "server_error", "scope": "all", "count": 2,
                "params": {"status": 500},
            }  # fmt: skip
            for _ in range(2):
                response = await client.get(f"{sim.url}/servers")
                assert response.status_code == 500
                assert response.json() == {"message": "Server Error"}
            assert (await client.get(f"{sim.url}/servers")).status_code == 200
            assert (await client.get(f"{sim.control_url}/faults")).json() == []

            await add_fault(sim, client, kind="server_error", status=503, count=1)
            response = await client.get(f"{sim.url}/servers")
            assert response.status_code == 503
            assert response.json() == {"message": "Service Unavailable"}
            await add_fault(sim, client, kind="server_error", params={"status": 502}, count=1)
            response = await client.get(f"{sim.url}/servers")
            assert response.status_code == 502
            assert response.headers["content-type"].startswith("text/html")
            assert "502 Bad Gateway" in response.text

    run(scenario)


def test_fault_scope_limits_which_endpoints_misbehave() -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            server_id = sim.fleet.ids()[0]
            await add_fault(sim, client, kind="forbidden", scope="status")
            assert (await client.get(f"{sim.url}/servers")).status_code == 200
            assert (await client.get(f"{sim.url}/servers/{server_id}")).status_code == 200
            response = await client.get(f"{sim.url}/servers/{server_id}/status")
            assert response.status_code == 403
            assert response.json() == {"message": "This action is unauthorized."}
            await client.delete(f"{sim.control_url}/faults")
            await add_fault(sim, client, kind="unauthorized", scope="servers")
            assert (await client.get(f"{sim.url}/servers")).status_code == 401
            response = await client.get(f"{sim.url}/servers/{server_id}/status")
            assert response.status_code == 200

    run(scenario)


def test_rate_limited_fault_sends_retry_after_as_seconds_or_a_date() -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            await add_fault(sim, client, kind="rate_limited", retry_after=7, count=1)
            response = await client.get(f"{sim.url}/servers")
            assert response.status_code == 429
            assert response.headers["retry-after"] == "7"
            assert response.json() == {"message": "Too Many Attempts."}
            await add_fault(sim, client, kind="rate_limited", retry_after=120, http_date=True)
            response = await client.get(f"{sim.url}/servers")
            assert response.status_code == 429
            when = parsedate_to_datetime(response.headers["retry-after"]).timestamp()
            assert 60 < when - time.time() <= 121

    run(scenario)


def test_timeout_fault_stalls_only_matching_requests() -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            server_id = sim.fleet.ids()[0]
            await add_fault(sim, client, kind="timeout", scope="servers", delay=1.0)
            stalled = asyncio.create_task(client.get(f"{sim.url}/servers", timeout=0.3))
            started = time.monotonic()
            other = await client.get(f"{sim.url}/servers/{server_id}/status")
            assert other.status_code == 200
            assert time.monotonic() - started < 0.9
            with pytest.raises(httpx.ReadTimeout):
                await stalled

    run(scenario)


def test_latency_fault_and_option_delay_answers() -> None:
    async def scenario() -> None:
        async with serve(latency=0.1) as (sim, client):
            started = time.monotonic()
            assert (await client.get(f"{sim.url}/servers")).status_code == 200
            assert time.monotonic() - started >= 0.1
            await add_fault(sim, client, kind="latency", delay=0.2, jitter=0.1)
            started = time.monotonic()
            assert (await client.get(f"{sim.url}/servers")).status_code == 200
            assert time.monotonic() - started >= 0.3

    run(scenario)


def test_broken_body_faults() -> None:
    async def scenario() -> None:
        async with serve(FakeClock()) as (sim, client):
            url = f"{sim.url}/servers"
            normal = (await client.get(url)).content

            await add_fault(sim, client, kind="malformed_json", count=1)
            response = await client.get(url)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            with pytest.raises(json.JSONDecodeError):
                json.loads(response.content)

            await add_fault(sim, client, kind="truncated_json", count=1)
            response = await client.get(url)
            assert response.status_code == 200
            assert response.content == normal[: len(normal) // 2]
            with pytest.raises(json.JSONDecodeError):
                json.loads(response.content)

            await add_fault(sim, client, kind="html_200", count=1)
            response = await client.get(url)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            assert response.text.startswith("<!DOCTYPE html>")

            await add_fault(sim, client, kind="empty_200", count=1)
            response = await client.get(url)
            assert response.status_code == 200
            assert response.content == b""

            assert (await client.get(url)).content == normal

    run(scenario)


def test_wrong_types_fault() -> None:
    async def scenario() -> None:
        async with serve(FakeClock()) as (sim, client):
            await add_fault(sim, client, kind="wrong_types", scope="servers")
            servers = (await client.get(f"{sim.url}/servers")).json()
            assert len(servers) == 25
            assert all(isinstance(s["specifications"]["cpu"], str) for s in servers)
            assert "four" in {s["specifications"]["cpu"] for s in servers}
            with_usage = [s for s in servers if s["usage"] is not None]
            assert with_usage
            assert all(isinstance(s["usage"]["traffic"], list) for s in with_usage)
            assert any(isinstance(s["id"], str) for s in servers)
            status = (await client.get(f"{sim.url}/servers/{sim.fleet.ids()[0]}/status")).json()
            assert status["progress"] in (0, 100)  # the fault's scope is the listing only

    run(scenario)


def test_missing_fields_fault() -> None:
    async def scenario() -> None:
        async with serve(FakeClock()) as (sim, client):
            await add_fault(sim, client, kind="missing_fields")
            servers = (await client.get(f"{sim.url}/servers")).json()
            assert len(servers) == 25
            assert sum("id" not in s for s in servers) == 9
            assert sum("hostname" not in s for s in servers) == 8
            assert sum("id" in s and "hostname" in s for s in servers) == 8

    run(scenario)


def test_duplicate_ids_fault() -> None:
    async def scenario() -> None:
        async with serve(FakeClock()) as (sim, client):
            await add_fault(sim, client, kind="duplicate_ids")
            servers = (await client.get(f"{sim.url}/servers")).json()
            ids = [s["id"] for s in servers]
            assert len(ids) == 25 + 7
            assert set(ids) == set(sim.fleet.ids())
            twins = {i for i in ids if ids.count(i) > 1}
            assert len(twins) == 7
            for twin_id in twins:
                hostnames = {s["hostname"] for s in servers if s["id"] == twin_id}
                assert len(hostnames) == 2

    run(scenario)


def test_absurd_values_fault_sends_negative_nan_and_huge_numbers() -> None:
    async def scenario() -> None:
        async with serve(FakeClock()) as (sim, client):
            await add_fault(sim, client, kind="absurd_values")
            response = await client.get(f"{sim.url}/servers")
            assert b"NaN" in response.content
            servers = json.loads(response.content)
            usages = [s["usage"] for s in servers if s["usage"] is not None]
            assert any(u["traffic"]["incoming"]["value"] < 0 for u in usages)
            assert any(math.isnan(u["cpu"]) for u in usages)
            assert any(u["traffic"]["outgoing"]["value"] == 1e300 for u in usages)
            status = await client.get(f"{sim.url}/servers/{sim.fleet.ids()[0]}/status")
            assert b'"progress":NaN' in status.content

    run(scenario)


def test_huge_response_fault_streams_the_body() -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            await add_fault(sim, client, kind="huge_response", megabytes=3, count=1)
            received = 0
            async with client.stream("GET", f"{sim.url}/servers") as response:
                assert response.status_code == 200
                assert "content-length" not in response.headers
                head = b""
                async for chunk in response.aiter_raw():
                    head = (head + chunk)[:16] if len(head) < 16 else head
                    received += len(chunk)
            assert head.startswith(b'[{"id":1,')
            assert 3 * 2**20 <= received < 3 * 2**20 + 2**20
            assert (await client.get(f"{sim.url}/servers")).status_code == 200

    run(scenario)


def test_redirect_other_host_fault() -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            await add_fault(sim, client, kind="redirect_other_host", count=1)
            response = await client.get(f"{sim.url}/servers", params={"page": "2"})
            assert response.status_code == 302
            location = f"http://127.0.0.2:{sim.port}/api/v1/servers?page=2"
            assert response.headers["location"] == location
            target = "http://203.0.113.9/collect"
            await add_fault(sim, client, kind="redirect_other_host", location=target)
            response = await client.get(f"{sim.url}/servers")
            assert response.headers["location"] == target

    run(scenario)


def test_delay_faults_stack_and_the_oldest_replacing_fault_wins() -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            await add_fault(sim, client, kind="latency", delay=0.05, count=1)
            await add_fault(sim, client, kind="forbidden", count=1)
            await add_fault(sim, client, kind="unauthorized", count=1)
            assert (await client.get(f"{sim.url}/servers")).status_code == 403
            faults = (await client.get(f"{sim.control_url}/faults")).json()
            assert [fault["kind"] for fault in faults] == ["unauthorized"]
            assert (await client.get(f"{sim.url}/servers")).status_code == 401
            assert (await client.get(f"{sim.url}/servers")).status_code == 200

    run(scenario)


def test_every_fault_kind_has_a_test_above() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    for kind in FAULT_KINDS:
        assert f'kind="{kind}"' in source, kind


# -- control endpoints -----------------------------------------------------------------------


def test_control_endpoints_add_change_and_delete_servers() -> None:
    async def scenario() -> None:
        async with serve(FakeClock()) as (sim, client):
            control = sim.control_url
            response = await client.post(
                f"{control}/servers",
                json={
                    "hostname": "neu-01.test", "status": "started", "cpu": 2, "ram": 4096,
                    "disk": 40, "traffic_limit_bytes": 1000,
                    "traffic": {"outgoing": {"value": 2000, "prev": 7}},
                },
            )  # fmt: skip
            assert response.status_code == 201
            added = response.json()
            check_server_shape(added)
            new_id = added["id"]
            assert new_id > max(sim.fleet.ids()[:-1])
            assert added["hostname"] == "neu-01.test"
            assert added["usage"]["traffic"]["outgoing"] == {
                "value": 2000,
                "prev": 7,
                "is_exceeded": True,
            }
            assert added["usage"]["traffic"]["incoming"]["value"] == 0
            assert sim.fleet.traffic_limit_bytes(new_id, "incoming") == 1000

            response = await client.post(
                f"{control}/servers", json={"hostname": "empty", "usage_null": True}
            )
            assert response.json()["usage"] is None

            patch = await client.patch(
                f"{control}/servers/{new_id}",
                json={"hostname": "renamed", "status": "stopped", "usage_null": True},
            )
            assert patch.status_code == 200
            assert patch.json()["hostname"] == "renamed"
            assert patch.json()["status"] == "stopped"
            assert patch.json()["usage"] is None
            listing = (await client.get(f"{sim.url}/servers")).json()
            assert {"id": new_id, "hostname": "renamed"}.items() <= listing[-2].items()

            deleted = await client.delete(f"{control}/servers/{new_id}")
            assert deleted.json() == {"deleted": new_id}
            assert (await client.get(f"{sim.url}/servers/{new_id}")).status_code == 404
            again = await client.delete(f"{control}/servers/{new_id}")
            assert again.status_code == 404
            assert "message" in again.json()

    run(scenario)


def test_control_patch_sets_traffic_and_status() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with serve(clock) as (sim, client):
            server_id = next(
                s["id"] for s in (await client.get(f"{sim.url}/servers")).json()
                if s["status"] == "started" and s["usage"] is not None
            )  # fmt: skip
            limit = sim.fleet.traffic_limit_bytes(server_id, "incoming")
            response = await client.patch(
                f"{sim.control_url}/servers/{server_id}",
                json={"traffic": {"incoming": {"value": limit + 1, "rate": 0}}},
            )
            incoming = response.json()["usage"]["traffic"]["incoming"]
            assert incoming["value"] == limit + 1
            assert incoming["is_exceeded"] is True
            response = await client.patch(
                f"{sim.control_url}/servers/{server_id}", json={"status": "stopped"}
            )
            frozen = response.json()["usage"]["traffic"]
            clock.now += 3600
            later = (await client.get(f"{sim.url}/servers/{server_id}")).json()["usage"]
            assert later["traffic"] == frozen
            assert later["cpu"] == 0.0
            status = (await client.get(f"{sim.url}/servers/{server_id}/status")).json()
            assert status == {
                "status": "stopped",
                "real_status": "stopped",
                "is_processing": False,
                "progress": status["progress"],
            }

    run(scenario)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "servers", b"{not json", 400),
        ("POST", "servers", b'"a string"', 400),
        ("POST", "servers", b'{"hostname": ""}', 400),
        ("POST", "servers", b'{"cpu": "4"}', 400),
        ("POST", "servers", b'{"colour": "red"}', 400),
        ("POST", "servers", b'{"id": 101}', 400),
        ("POST", "servers", b'{"traffic": {"sideways": {"value": 1}}}', 400),
        ("PATCH", "servers/101", b'{"traffic": {"incoming": {"value": -1}}}', 400),
        ("PATCH", "servers/101", b'{"usage_null": "yes"}', 400),
        ("PATCH", "servers/99999", b'{"hostname": "x"}', 404),
        ("POST", "faults", b'{"kind": "no_such_fault"}', 400),
        ("POST", "faults", b'{"kind": "server_error", "scope": "everything"}', 400),
        ("POST", "faults", b'{"kind": "server_error", "count": 0}', 400),
        ("POST", "faults", b'{"kind": "server_error", "status": 200}', 400),
        ("POST", "faults", b'{"kind": "server_error", "status": true}', 400),
        ("POST", "faults", b'{"kind": "timeout", "delay": "long"}', 400),
        ("POST", "faults", b'{"kind": "forbidden", "status": 403}', 400),
        ("POST", "faults", b'{"kind": "latency", "delay": 1, "params": {"delay": 2}}', 400),
        ("POST", "faults", b'{"kind": "redirect_other_host", "location": "a\\r\\nb: c"}', 400),
        ("POST", "faults", b"[]", 400),
        ("DELETE", "faults/42", b"", 404),
        ("GET", "servers", b"", 405),
        ("PUT", "state", b"", 405),
        ("GET", "nothing/here", b"", 404),
    ],
)
def test_control_endpoints_reject_bad_requests(
    method: str, path: str, body: bytes, status: int
) -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            response = await client.request(method, f"{sim.control_url}/{path}", content=body)
            assert response.status_code == status, response.text
            assert isinstance(response.json()["message"], str)
            assert (await client.get(f"{sim.control_url}/faults")).json() == []
            assert len(sim.fleet) == 25

    run(scenario)


def test_stats_count_requests_per_endpoint_and_reset() -> None:
    async def scenario() -> None:
        async with serve() as (sim, client):
            server_id = sim.fleet.ids()[0]
            await client.get(f"{sim.url}/servers")
            await client.get(f"{sim.url}/servers")
            await client.get(f"{sim.url}/servers/{server_id}")
            await client.get(f"{sim.url}/servers/{server_id}/status")
            await client.get(f"{sim.url}/servers", headers={"Authorization": "Bearer no"})
            await client.get(f"{sim.url}/elsewhere")
            await client.get(f"{sim.control_url}/state")
            stats = (await client.get(f"{sim.control_url}/stats")).json()
            assert stats == {
                "total": 6, "servers": 3, "server": 1, "status": 1, "other": 1,
                "responses": {"200": 4, "401": 1, "404": 1},
            }  # fmt: skip
            state = (await client.get(f"{sim.control_url}/state")).json()
            assert state["stats"] == stats
            reset = await client.post(f"{sim.control_url}/stats/reset")
            assert reset.json()["total"] == 0
            stats = (await client.get(f"{sim.control_url}/stats")).json()
            assert stats["total"] == stats["servers"] == 0

    run(scenario)


def test_state_describes_servers_and_faults() -> None:
    async def scenario() -> None:
        async with serve(FakeClock()) as (sim, client):
            await add_fault(sim, client, kind="latency", delay=0.0, scope="status", count=3)
            state = (await client.get(f"{sim.control_url}/state")).json()
            assert state["now"] == MID_MAY
            assert state["billing_period_start"] == "2024-05-01T00:00:00.000000Z"
            assert [s["id"] for s in state["servers"]] == sim.fleet.ids()
            first = state["servers"][0]
            assert set(first) == {"id", "hostname", "status", "usage_null", "traffic"}
            assert set(first["traffic"]["incoming"]) == {
                "value",
                "prev",
                "limit_bytes",
                "is_exceeded",
            }
            assert state["faults"] == [
                {
                    "id": 1,
                    "kind": "latency",
                    "scope": "status",
                    "count": 3,
                    "params": {"delay": 0.0, "jitter": 0.0},
                }
            ]
            removed = await client.delete(f"{sim.control_url}/faults/1")
            assert removed.json() == {"removed": 1}
            cleared = await client.delete(f"{sim.control_url}/faults")
            assert cleared.json() == {"cleared": 0}

    run(scenario)


# -- size ------------------------------------------------------------------------------------


def test_a_large_listing_is_complete_and_cached_for_a_second() -> None:
    clock = FakeClock()
    fleet = Fleet(clock, servers=2_000)
    body = fleet.listing_json()
    servers = json.loads(body)
    assert len(servers) == 2_000
    assert len({s["id"] for s in servers}) == 2_000
    assert fleet.listing_json() is body  # the same second: served from the cache
    clock.now += 1
    assert fleet.listing_json() is not body


def test_large_fleet_over_http_in_pages() -> None:
    async def scenario() -> None:
        async with serve(FakeClock(), servers=10_000) as (sim, client):
            url: str | None = f"{sim.url}/servers?per_page=1000"
            ids: list[int] = []
            while url is not None:
                body = (await client.get(url)).json()
                ids += [server["id"] for server in body["data"]]
                url = body["links"]["next"]
            assert ids == sim.fleet.ids()
            assert len(ids) == 10_000

    run(scenario)


# -- command line ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_command_line_serves_until_sigterm_and_never_prints_the_token(tmp_path: Path) -> None:
    canary = "canary-token-0c9e7d"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOTIC_")}
    env.update(EVOTIC_SIMULATOR_TOKEN=canary, PYTHONUNBUFFERED="1")
    log_path = tmp_path / "simulator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "simulator", "--listen-address", "127.0.0.1:0",
             "--servers", "12", "--fault", "rate_limited:servers", "--paginate"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline and process.poll() is None:
            found = re.search(r"at (http://127\.0\.0\.1:\d+/api/v1) ", log_path.read_text())
            url = found.group(1) if found else None
            time.sleep(0.05)
        assert url is not None, log_path.read_text()
        auth = {"Authorization": f"Bearer {canary}"}
        assert httpx.get(f"{url}/servers", headers=auth).status_code == 429
        server_id = httpx.get(url.replace("/api/v1", "/_simulator/state")).json()["servers"][0][
            "id"
        ]
        assert httpx.get(f"{url}/servers/{server_id}", headers=auth).status_code == 200
        assert httpx.get(f"{url}/servers/{server_id}").status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert "serving 12 servers" in output
    assert canary not in output


def test_command_line_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--fault", "no_such_fault"],
        ["--fault", "timeout:nowhere"],
        ["--listen-address", "nowhere"],
        ["--per-page", "0"],
        ["--servers", "-1"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            simulator_main(argv)
        assert exit_info.value.code == 2, argv
    assert "no_such_fault" in capsys.readouterr().err
