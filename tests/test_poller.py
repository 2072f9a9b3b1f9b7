"""The poll loop's timing: start-up jitter, back-off after failures, Retry-After holds.

The client is real; only its transport is scripted, and the loop's sleep is recorded instead
of waited for, so the schedule itself is what is asserted.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import pytest
import structlog
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.api.client import EvoticClient
from exporter.api.token import TokenSource
from exporter.exposition.own_metrics import AccountMetrics
from exporter.polling.poller import Poller, PollSettings
from exporter.polling.snapshot import PollState
from exporter.runtime.logs import Redactor
from exporter.service.account import Account
from exporter.settings.quotas import Quotas, billing_period
from exporter.web.app import scraped
from simulator import FaultSet, Fleet, SimulatorApp


class _Stop(Exception):
    pass


def _schedule(answers: list[httpx.Response], polls: int, seed: int = 1,
              interval: float = 10.0) -> list[float]:  # fmt: skip
    """Run the poll loop for ``polls`` polls; return every sleep it asked for."""
    script = iter(answers)
    sleeps: list[float] = []
    now = [0.0]  # the client's monotonic clock, moved on by every sleep

    def handler(request: httpx.Request) -> httpx.Response:
        return next(script)

    async def no_wait(seconds: float) -> None:
        return None

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        if len(sleeps) > polls:
            raise _Stop

    async def run() -> None:
        token = TokenSource(Redactor(), token="poller-test-token")
        client = EvoticClient("https://api.test/v1", token, timeout=1, user_agent="t",
                              transport=httpx.MockTransport(handler), sleep=no_wait,
                              monotonic=lambda: now[0])  # fmt: skip
        poller = Poller(client, token, PollSettings(interval=interval), sleep=sleep,
                        rng=random.Random(seed))  # fmt: skip
        with pytest.raises(_Stop):
            await poller._poll_loop()

    asyncio.run(run())
    return sleeps


OK = httpx.Response(200, json=[{"id": 1, "hostname": "a"}])
DOWN = httpx.Response(503)


def test_first_poll_is_jittered_and_replicas_differ() -> None:
    firsts = {round(_schedule([OK], polls=0, seed=seed)[0], 6) for seed in range(5)}
    assert len(firsts) == 5
    assert all(0 <= first <= PollSettings(interval=10).startup_jitter for first in firsts)


def test_interval_backs_off_after_repeated_failures_and_resets_on_success() -> None:
    answers = [DOWN] * 3 * 7 + [OK, OK]  # each failed poll makes three attempts
    sleeps = _schedule(answers, polls=9)[1:]
    cap = PollSettings(interval=10).backoff_cap
    expected = [10, 20, 40, 80, 100, cap, cap, 10, 10]
    assert sleeps == pytest.approx(expected, abs=0.5)


def test_rate_limit_delays_the_next_poll_past_retry_after() -> None:
    limited = httpx.Response(429, headers={"Retry-After": "45"})
    sleeps = _schedule([limited, OK], polls=2)[1:]
    assert sleeps[0] == pytest.approx(45, abs=0.5)
    assert sleeps[1] == pytest.approx(10, abs=0.5)


# ------------------------------------------------------------------ one cycle, in process
# The client talks to the simulator's ASGI app (or to a scripted transport where an answer
# must be crafted); the poller's clock is a fake one; nothing sleeps.

SIM_TOKEN = "poller-sim-token"
T0 = 1_717_243_200.0  # 2024-06-01T12:00:00Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Published:
    """The publish callback: records every state handed over, in order."""

    def __init__(self) -> None:
        self.states: list[PollState] = []

    async def __call__(self, state: PollState) -> None:
        self.states.append(state)


def _sim(servers: int = 5) -> tuple[Fleet, FaultSet, httpx.ASGITransport]:
    fleet = Fleet(lambda: T0, servers=servers, seed=3)
    faults = FaultSet()
    app = SimulatorApp(fleet, faults, SIM_TOKEN)
    return fleet, faults, httpx.ASGITransport(app=app)


def _poller(
    transport: httpx.AsyncBaseTransport,
    published: Published,
    clock: Clock,
    *,
    token: TokenSource | None = None,
    **settings: object,
) -> Poller:
    token = token or TokenSource(Redactor(), token=SIM_TOKEN)
    client = EvoticClient("http://sim/api/v1", token, timeout=5, user_agent="t",
                          transport=transport, sleep=_no_wait)  # fmt: skip
    quotas = Quotas({"incoming": 1e12, "outgoing": 1e12})
    return Poller(client, token, PollSettings(**settings), quotas=quotas,  # type: ignore[arg-type]
                  publish=published, clock=clock)  # fmt: skip


async def _no_wait(seconds: float) -> None:
    return None


def test_a_poll_publishes_one_snapshot_with_its_outcome() -> None:
    fleet, _, transport = _sim()
    published, clock = Published(), Clock()

    async def scenario() -> None:
        poller = _poller(transport, published, clock)
        assert await poller.poll_once()

    asyncio.run(scenario())
    [state] = published.states
    assert state.snapshot is not None
    assert state.outcome is not None
    assert [server.id for server in state.snapshot.servers] == [str(i) for i in fleet.ids()]
    assert state.snapshot.taken_at == T0
    assert state.last_success == T0
    assert state.snapshot.period == billing_period(T0, 1)
    assert state.snapshot.quotas.for_server(state.snapshot.servers[0]) == {
        "incoming": 1e12, "outgoing": 1e12
    }  # fmt: skip
    assert state.outcome.ok
    assert state.outcome.finished_at == T0
    assert [phase for phase, _ in state.outcome.phases] == ["fetch", "validate"]


def test_a_failed_poll_keeps_the_last_snapshot_and_logs_start_change_and_recovery() -> None:
    _, faults, transport = _sim()
    published, clock = Published(), Clock()

    async def scenario() -> list[bool]:
        poller = _poller(transport, published, clock)
        results = [await poller.poll_once()]
        faults.add("server_error", status=503)
        clock.now += 60
        results.append(await poller.poll_once())
        results.append(await poller.poll_once())
        faults.clear()
        faults.add("unauthorized")
        results.append(await poller.poll_once())
        faults.clear()
        clock.now += 60
        results.append(await poller.poll_once())
        return results

    with structlog.testing.capture_logs() as logs:
        results = asyncio.run(scenario())
    assert results == [True, False, False, False, True]
    good = published.states[0].snapshot
    failed = published.states[1:4]
    assert [s.outcome.reason for s in failed if s.outcome] == [
        "server_error",
        "server_error",
        "auth",
    ]
    assert all(state.snapshot is good and state.last_success == T0 for state in failed)
    events = [(entry["event"], entry.get("reason")) for entry in logs]
    assert events == [
        ("first poll succeeded", None),
        ("poll failed", "server_error"),
        ("poll failed again", "server_error"),
        ("poll still failing", "auth"),
        ("poll recovered", None),
    ]
    recovered = logs[-1]
    assert recovered["outage_seconds"] == 120.0  # from the last success, at T0


LISTING = [
    {"id": 1, "hostname": "a", "status": "started"},
    {"id": 2, "hostname": "b", "status": "started"},
    {"id": 3, "hostname": "c", "status": "stopped"},
    {"id": 4, "hostname": "d", "status": "stopped"},
]


def test_a_server_whose_record_turns_bad_keeps_its_last_good_record() -> None:
    bad_two = [dict(LISTING[0]), {"id": 2, "hostname": 7}, *LISTING[2:],
               {"id": 5, "hostname": ["never", "valid"]}]  # fmt: skip
    answers = iter([LISTING, bad_two, LISTING[:1]])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=next(answers))

    published, clock = Published(), Clock()

    async def scenario() -> None:
        poller = _poller(httpx.MockTransport(handler), published, clock)
        for _ in range(3):
            assert await poller.poll_once()

    asyncio.run(scenario())
    first, second, third = (state.snapshot for state in published.states)
    assert first is not None
    assert second is not None
    assert third is not None
    by_id = {server.id: server for server in second.servers}
    assert sorted(by_id) == ["1", "2", "3", "4"]  # 5 was never valid: not exported
    assert by_id["2"] is first.servers[1]  # the last good record, not the bad one
    assert (second.rejected, second.kept, second.listed) == (2, 1, 3)
    # Deleted servers go at once, however good their last record was.
    assert [server.id for server in third.servers] == ["1"]
    assert (third.rejected, third.kept) == (0, 0)


def test_status_sweep_publishes_the_last_snapshot_with_its_answers() -> None:
    fleet, _, transport = _sim(servers=4)
    published, clock = Published(), Clock()

    async def scenario() -> Poller:
        poller = _poller(transport, published, clock, collect_status=True)
        await poller.poll_once()
        await poller.sweep_statuses()
        fleet.delete_server(fleet.ids()[0])
        await poller.poll_once()
        return poller

    with structlog.testing.capture_logs():
        asyncio.run(scenario())
    polled, swept, repolled = published.states
    assert polled.snapshot is not None
    assert swept.snapshot is not None
    assert polled.snapshot.statuses == {}
    assert swept.snapshot.servers is polled.snapshot.servers
    assert set(swept.snapshot.statuses) == {server.id for server in polled.snapshot.servers}
    assert swept.outcome is polled.outcome
    # The next poll carries the answers on, and drops the deleted server's.
    assert repolled.snapshot is not None
    ids = {server.id for server in repolled.snapshot.servers}
    assert set(repolled.snapshot.statuses) == ids
    assert len(ids) == 3


def test_status_sweep_failures_keep_the_last_known_status() -> None:
    _, faults, transport = _sim(servers=3)
    published, clock = Published(), Clock()

    async def scenario() -> None:
        poller = _poller(transport, published, clock, collect_status=True)
        await poller.poll_once()
        await poller.sweep_statuses()
        faults.add("server_error", scope="status", status=500)
        await poller.sweep_statuses()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(scenario())
    first_sweep, second_sweep = published.states[1].snapshot, published.states[2].snapshot
    assert first_sweep is not None
    assert second_sweep is not None
    assert second_sweep.statuses == first_sweep.statuses
    incomplete = [entry for entry in logs if entry["event"] == "status sweep incomplete"]
    assert incomplete[0]["failed"] == 3
    assert incomplete[0]["reasons"] == {"server_error": 3}


def test_a_bug_is_an_internal_failure_and_the_loop_goes_on(tmp_path: Path) -> None:
    published, clock = Published(), Clock()
    calls = iter([RuntimeError("boom"), None])

    def handler(request: httpx.Request) -> httpx.Response:
        error = next(calls)
        if error is not None:
            raise error
        return httpx.Response(200, json=LISTING)

    async def scenario() -> list[bool]:
        poller = _poller(httpx.MockTransport(handler), published, clock)
        return [await poller.poll_once(), await poller.poll_once()]

    with structlog.testing.capture_logs() as logs:
        assert asyncio.run(scenario()) == [False, True]
    assert published.states[0].outcome is not None
    assert published.states[0].outcome.reason == "internal"
    assert logs[0]["event"] == "poll failed unexpectedly"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("  \n", "is empty"),
        # Sent, this would fail every request before it leaves, as if the network were down.
        (f"{SIM_TOKEN}\nsecond-line", "holds a line break or another control character"),
    ],
)
def test_a_bad_token_file_fails_the_poll_as_token_file(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "token"
    path.write_text(SIM_TOKEN)
    _, _, transport = _sim()
    published, clock = Published(), Clock()
    token = TokenSource(Redactor(), path=path)
    sent: list[httpx.Request] = []

    async def counted(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return await transport.handle_async_request(request)

    async def scenario() -> list[bool]:
        poller = _poller(httpx.MockTransport(counted), published, clock, token=token)
        first = await poller.poll_once()
        path.write_text(content)
        return [first, await poller.poll_once()]

    with structlog.testing.capture_logs():
        assert asyncio.run(scenario()) == [True, False]
    outcome = published.states[1].outcome
    assert outcome is not None
    assert outcome.reason == "token_file"
    assert outcome.message.startswith(f"{path} {problem}")
    assert len(sent) == 1, "nothing is sent with a token that cannot be sent"


def test_set_aside_records_are_logged_when_the_set_changes_not_every_poll() -> None:
    one_bad = [*LISTING, {"id": 5, "hostname": 7}]
    two_bad = [*LISTING, {"id": 5, "hostname": 7}, {"id": 6, "hostname": 7}]
    answers = iter([one_bad, one_bad, one_bad, two_bad, LISTING, LISTING])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=next(answers))

    async def scenario() -> None:
        poller = _poller(httpx.MockTransport(handler), Published(), Clock())
        for _ in range(6):
            assert await poller.poll_once()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(scenario())
    events = [(entry["event"], entry.get("count")) for entry in logs]
    assert events == [
        ("servers set aside", 1),
        ("first poll succeeded", None),
        ("servers set aside", 2),
        ("no servers set aside any more", None),
    ]


def test_outage_is_counted_from_the_last_success() -> None:
    _, faults, transport = _sim()
    clock = Clock()

    async def scenario() -> None:
        poller = _poller(transport, Published(), clock)
        await poller.poll_once()  # succeeds at T0
        faults.add("server_error", status=503)
        clock.now = T0 + 50  # the first failure comes 50 s after the last success
        await poller.poll_once()
        clock.now = T0 + 110
        await poller.poll_once()
        faults.clear()
        clock.now = T0 + 170
        await poller.poll_once()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(scenario())
    [recovered] = [entry for entry in logs if entry["event"] == "poll recovered"]
    assert recovered["outage_seconds"] == 170.0


# ------------------------------------------------------------------ what the counts say
# The whole account in process: poller -> exposition cache -> own metrics, read back from the
# bytes a scrape would get.


def _exported(account: Account) -> tuple[set[str], dict[str, float]]:
    """The server ids with per-server series in the body a scrape gets now, and the counts."""
    view = scraped(account)
    body = view.exposition.text.decode()
    ids = {
        sample.labels["server_id"]
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if "server_id" in sample.labels
    }
    own = generate_latest(account.metrics.registry).decode()
    counts = {
        sample.name: sample.value
        for family in text_string_to_metric_families(own)
        for sample in family.samples
        if sample.name.startswith("evotic_servers")
    }
    return ids, counts


def test_counts_say_what_is_exported_when_records_are_set_aside() -> None:
    listing = [{"id": n, "hostname": f"host-{n}", "status": "started"} for n in range(1, 9)]
    # Server 2's record turns bad (it keeps its last good one), 3 is listed twice (its first
    # record is used), and 9 was never valid (nothing to keep: not exported).
    set_aside = [
        listing[0],
        {"id": 2, "hostname": 7},
        *listing[2:],
        {"id": 3, "hostname": "host-3-again"},
        {"id": 9, "hostname": ["never"]},
    ]
    new_only = [*listing, {"id": 10, "hostname": None}]  # only a new server's record is bad
    answers = iter([listing, set_aside, new_only, listing])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=next(answers))

    clock = Clock()
    seen: list[tuple[set[str], dict[str, float]]] = []

    async def scenario() -> None:
        token = TokenSource(Redactor(), token=SIM_TOKEN)
        client = EvoticClient("http://sim/api/v1", token, timeout=5, user_agent="t",
                              transport=httpx.MockTransport(handler), sleep=_no_wait)  # fmt: skip
        settings = PollSettings(interval=60, stale_after=600)
        account = Account(client, token, settings, AccountMetrics(), clock=clock)
        for _ in range(4):
            assert await account.poller.poll_once()
            seen.append(_exported(account))
            clock.now += 60
        clock.now += 600  # no successful poll for longer than stale_after
        seen.append(_exported(account))
        await account.stop()

    with structlog.testing.capture_logs():
        asyncio.run(scenario())
    everyone = {str(n) for n in range(1, 9)}

    def counts(servers: int, rejected: int, kept: int) -> dict[str, float]:
        return {"evotic_servers": servers, "evotic_servers_rejected": rejected,
                "evotic_servers_kept": kept}  # fmt: skip

    good, kept, new, recovered, stale = seen
    assert good == (everyone, counts(8, 0, 0))
    # Three records set aside; server 2 is exported from its last good record and counted.
    assert kept == (everyone, counts(8, 3, 1))
    # One record set aside, for a server never seen valid: not exported, not counted.
    assert new == (everyone, counts(8, 1, 0))
    assert recovered == (everyone, counts(8, 0, 0))
    # Stale data: no per-server series, so no server is counted as exported either.
    assert stale == (set(), counts(0, 0, 0))
    for ids, found in seen:
        assert found["evotic_servers"] == len(ids)


def test_poll_now_cuts_the_wait_short_and_starts_the_back_off_afresh() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return DOWN

    async def scenario() -> None:
        token = TokenSource(Redactor(), token="poller-test-token")
        client = EvoticClient("https://api.test/v1", token, timeout=1, user_agent="t",
                              transport=httpx.MockTransport(handler), sleep=_no_wait)  # fmt: skip
        sleeps: list[float] = []
        asked = asyncio.Event()
        hold = [False]

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            asked.set()
            if hold[0]:
                await asyncio.Event().wait()  # a wait only poll_now can cut short

        poller = Poller(client, token, PollSettings(interval=60), sleep=sleep,
                        rng=random.Random(1))  # fmt: skip
        poller.start()
        while len(sleeps) < 5:  # the jitter, then four failed polls
            asked.clear()
            await asked.wait()
        assert sleeps[1:5] == pytest.approx([60, 120, 240, 300], abs=1)  # backing off
        hold[0] = True
        asked.clear()
        await asked.wait()  # the loop now waits out the back-off
        polls = len(calls)
        asked.clear()
        poller.poll_now()
        await asyncio.wait_for(asked.wait(), 5)
        assert len(calls) == polls + 3  # polled at once (three attempts of a failing poll)
        assert sleeps[-1] == pytest.approx(60, abs=1)  # and the back-off began afresh
        await poller.stop()

    asyncio.run(scenario())
