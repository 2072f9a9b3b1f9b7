"""The simulator's model without HTTP: the fleet, its clock, its control methods and the faults."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from simulator import FaultError, FaultSet, Fleet, UnknownServerError
from simulator.faults import Endpoint
from simulator.generator import FleetMix
from simulator.servers import billing_period_start


def at(*moment: int) -> float:
    return datetime(*moment, tzinfo=UTC).timestamp()  # type: ignore[misc]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exceeded_servers(fleet: Fleet) -> list[int]:
    return [
        server["id"]
        for server in fleet.state()["servers"]
        if any(counter["is_exceeded"] for counter in server["traffic"].values())
    ]


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    clock = FakeClock(at(2024, 5, 15))
    assert Fleet(clock).listing_json() == Fleet(clock).listing_json()
    assert Fleet(clock, seed=2).listing_json() != Fleet(clock).listing_json()
    assert Fleet(clock, servers=0).listing() == []


def test_fast_json_rendering_equals_the_dictionaries() -> None:
    clock = FakeClock(at(2024, 5, 15, 8, 30))
    fleet = Fleet(clock, servers=300)
    fleet.add_server("ünïcode-ホスト", usage_null=True)
    fleet.add_server("plain", status="stopped")
    fleet.set_traffic(fleet.ids()[0], "incoming", value=123)
    assert json.loads(fleet.listing_json()) == fleet.listing()
    assert json.loads(fleet.listing_json(10, 5)) == fleet.listing(10, 5)
    assert fleet.listing(10, 5) == fleet.listing()[10:15]


def test_fleet_mix_for_the_default_size() -> None:
    mix = FleetMix.for_size(25)
    assert (mix.installing, mix.suspended, mix.stopped) == (2, 1, 3)
    assert mix.exceeded >= 2
    assert mix.heading >= 2
    assert FleetMix.for_size(1).exceeded == 0


@pytest.mark.parametrize("seed", range(1, 11))
def test_a_few_servers_are_exceeded_all_month_and_a_couple_more_are_heading_there(
    seed: int,
) -> None:
    clock = FakeClock(at(2024, 5, 1, 0, 30))
    fleet = Fleet(clock, seed=seed)
    early = exceeded_servers(fleet)
    assert 2 <= len(early) <= 4
    clock.now = at(2024, 5, 31, 23, 59)
    late = exceeded_servers(fleet)
    assert set(early) <= set(late)
    assert len(late) <= 5
    nearly = [
        server["id"]
        for server in fleet.state()["servers"]
        if server["id"] not in late
        and any(c["value"] > 0.7 * c["limit_bytes"] for c in server["traffic"].values())
    ]
    assert len(nearly) + len(late) - len(early) >= 2


def test_usage_moves_smoothly_and_stays_within_the_plan() -> None:
    clock = FakeClock(at(2024, 5, 15))
    fleet = Fleet(clock)
    before = {s["id"]: s for s in fleet.listing()}
    clock.now += 1
    after = {s["id"]: s for s in fleet.listing()}
    cpu_moved = 0
    for server_id, server in after.items():
        usage, earlier = server["usage"], before[server_id]["usage"]
        if usage is None:
            continue
        specs = server["specifications"]
        assert 0 <= usage["ram"] <= specs["ram"]
        assert 0 <= usage["disk"] <= specs["disk"]
        assert abs(usage["cpu"] - earlier["cpu"]) < 10
        cpu_moved += usage["cpu"] != earlier["cpu"]
    assert cpu_moved >= 5
    clock.now += 2 * 365 * 86400
    years_later = {s["id"]: s for s in fleet.listing()}
    for server_id, server in years_later.items():
        if server["usage"] is not None:
            assert server["usage"]["disk"] >= after[server_id]["usage"]["disk"]
            assert server["usage"]["disk"] <= server["specifications"]["disk"]


def test_billing_period_starts_on_the_first_of_the_month_utc() -> None:
    assert billing_period_start(at(2024, 5, 15, 13, 5)) == at(2024, 5, 1)
    assert billing_period_start(at(2024, 5, 1)) == at(2024, 5, 1)
    assert billing_period_start(at(2024, 12, 31, 23, 59, 59)) == at(2024, 12, 1)
    assert billing_period_start(at(2025, 1, 1, 0, 0, 1)) == at(2025, 1, 1)


def test_status_change_freezes_traffic_and_restart_resumes_it() -> None:
    clock = FakeClock(at(2024, 5, 10))
    fleet = Fleet(clock)
    server_id = next(s["id"] for s in fleet.listing() if s["status"] == "started")
    value = fleet.traffic_value(server_id, "outgoing")
    fleet.set_status(server_id, "stopped")
    clock.now += 86400
    assert fleet.traffic_value(server_id, "outgoing") == value
    fleet.set_status(server_id, "started")
    clock.now += 86400
    assert fleet.traffic_value(server_id, "outgoing") > value
    clock.now = at(2024, 6, 1, 0, 0, 1)
    assert fleet.traffic_value(server_id, "outgoing") < value


def test_control_methods_refuse_unknown_servers_and_never_reuse_ids() -> None:
    fleet = Fleet(FakeClock(at(2024, 5, 10)))
    highest = max(fleet.ids())
    fleet.delete_server(highest)
    assert highest not in fleet
    new_id = fleet.add_server("fresh")
    assert new_id > highest
    with pytest.raises(ValueError, match="in use"):
        fleet.add_server(server_id=new_id)
    assert fleet.add_server(server_id=5) == 5
    assert fleet.add_server() > new_id
    calls = [
        lambda: fleet.server(highest),
        lambda: fleet.status(highest),
        lambda: fleet.delete_server(highest),
        lambda: fleet.rename_server(highest, "x"),
        lambda: fleet.set_status(highest, "started"),
        lambda: fleet.set_usage_null(highest, True),
        lambda: fleet.set_traffic(highest, "incoming", value=1),
        lambda: fleet.traffic_limit_bytes(highest),
    ]
    for call in calls:
        with pytest.raises(UnknownServerError):
            call()


def test_churn_is_deterministic_and_a_huge_clock_jump_stays_cheap() -> None:
    start = at(2024, 5, 10)
    first, second = FakeClock(start), FakeClock(start)
    one, other = Fleet(first, churn_interval=10), Fleet(second, churn_interval=10)
    first.now = second.now = start + 95
    assert one.state() == other.state()
    assert one.state()["churn_steps"] == 9
    assert len(one) == 25

    clock = FakeClock(start)
    fleet = Fleet(clock, churn_interval=1)
    clock.now += 365 * 86400
    assert len(fleet) == 25
    assert fleet.state()["churn_steps"] == 365 * 86400


def test_a_large_fleet_has_unique_names_and_a_tenth_over_their_limit() -> None:
    # The benchmark lists up to 50,000 servers; 2,000 already number every name prefix past 99
    # and share the documentation networks' 762 IPv4 addresses twice over.
    fleet = Fleet(FakeClock(at(2024, 5, 15)), servers=2_000)
    servers = json.loads(fleet.listing_json())
    assert len(servers) == 2_000
    assert len({s["hostname"] for s in servers}) == 2_000
    numbers = [re.search(r"-(\d+)(\.|$)", s["hostname"]) for s in servers]
    assert max(int(found.group(1)) for found in numbers if found) > 99
    assert len(exceeded_servers(fleet)) >= 200


def test_fault_counts_scopes_and_order() -> None:
    faults = FaultSet()
    latency = faults.add("latency", "servers", delay=0.5, count=2)
    first = faults.add("server_error", "all", count=1)
    second = faults.add("forbidden", "status")
    hit = faults.hit(Endpoint.SERVERS)
    assert hit.delay == 0.5
    assert hit.reply is first
    hit = faults.hit(Endpoint.STATUS)
    assert (hit.delay, hit.reply) == (0.0, second)
    hit = faults.hit(Endpoint.SERVERS)
    assert (hit.delay, hit.reply) == (0.5, None)
    assert faults.active() == [second]
    assert latency.remaining == 0
    assert faults.hit(Endpoint.OTHER).faults == ()
    assert faults.clear() == 1


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"kind": 3},
        {"kind": "latency", "scope": 1},
        {"kind": "latency", "count": True},
        {"kind": "latency", "count": -1},
        {"kind": "latency", "count": 1.5},
        {"kind": "latency", "delay": -1},
        {"kind": "latency", "delay": float("inf")},
        {"kind": "latency", "params": []},
        {"kind": "latency", "params": {"scope": "status"}},
        {"kind": "rate_limited", "http_date": 1},
        {"kind": "rate_limited", "retry_after": 1.5},
        {"kind": "huge_response", "megabytes": 0},
        {"kind": "redirect_other_host", "location": ""},
    ],
)
def test_fault_requests_are_validated(body: object) -> None:
    with pytest.raises(FaultError):
        FaultSet().add_from_json(body)


def test_fault_defaults() -> None:
    faults = FaultSet()
    defaults = {
        kind: faults.add(kind).params
        for kind in ("server_error", "rate_limited", "timeout", "latency", "huge_response")
    }
    assert defaults == {
        "server_error": {"status": 500},
        "rate_limited": {"retry_after": 30, "http_date": False},
        "timeout": {"delay": 30.0},
        "latency": {"delay": 0.5, "jitter": 0.0},
        "huge_response": {"megabytes": 64.0},
    }
