"""The rate budget: what the API's headers say, and the pacing of status calls, on a fake clock;
the simulator's limiter that the end-to-end proof runs against."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import structlog

from exporter.api.client import EvoticClient
from exporter.api.ratelimit import RateBudget, RateBudgets
from exporter.api.token import TokenSource
from exporter.exposition.own_metrics import AccountMetrics
from exporter.polling.poller import PollSettings
from exporter.runtime.logs import Redactor
from exporter.service.account import Account
from simulator import FaultSet, Fleet, SimulatorApp
from simulator.ratelimit import RateLimiter

T0 = 1_717_243_200.0


class Clock:
    """Monotonic and wall time moved together by ``sleep``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return T0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # others run meanwhile


def budget(clock: Clock, **kwargs: float) -> RateBudget:
    return RateBudget(monotonic=clock.monotonic, wall=clock.wall, sleep=clock.sleep, **kwargs)


def headers(limit: int, remaining: int, **extra: str) -> dict[str, str]:
    return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining), **extra}


def test_nothing_is_known_or_paced_until_the_api_states_a_limit() -> None:
    clock = Clock()
    b = budget(clock)
    asyncio.run(b.pace())
    assert (b.limit, b.remaining, clock.slept) == (None, None, [])
    for garbage in ({"x-ratelimit-limit": "sixty", "x-ratelimit-remaining": "3"},
                    {"x-ratelimit-limit": "60"}, headers(60, -1)):  # fmt: skip
        b.observe(garbage)
        assert b.limit is None


def test_status_calls_stop_at_the_reserve_and_resume_in_the_next_window() -> None:
    clock = Clock()
    b = budget(clock)
    seen: list[tuple[int, int]] = []
    b.listen(lambda limit, remaining: seen.append((limit, remaining)))
    b.observe(headers(60, 50))
    granted = 0

    async def spend() -> None:
        nonlocal granted
        with structlog.testing.capture_logs() as logs:
            for _ in range(38):
                await b.pace()
                granted += 1
        assert clock.slept == []  # 50 left, 12 kept back: 38 go at once
        assert logs == []
        with structlog.testing.capture_logs() as logs:
            waiting = asyncio.ensure_future(b.pace())
            await asyncio.sleep(0)
            assert not waiting.done() or clock.slept
            await waiting
        events = [entry["event"] for entry in logs]
        assert events == ["pacing status calls until the rate limit window resets",
                          "status calls resumed"]  # fmt: skip
        # It waited, a second at a time, for the minute a window is taken to last.
        assert 59 <= sum(clock.slept) <= 61
        assert max(clock.slept) <= 1.0

    asyncio.run(spend())
    assert seen == [(60, 50)]


def test_a_new_window_seen_in_an_answer_ends_the_pause_at_once() -> None:
    clock = Clock()
    b = budget(clock)
    b.observe(headers(60, 12))

    async def scenario() -> None:
        waiting = asyncio.ensure_future(b.pace())
        await asyncio.sleep(0)
        clock.now += 5
        b.observe(headers(60, 59))  # a listing poll's answer: the window has begun anew
        await waiting

    asyncio.run(scenario())
    assert sum(clock.slept) <= 2.0


def test_the_reset_time_a_429_gives_is_used() -> None:
    clock = Clock()
    b = budget(clock)
    b.observe(headers(60, 0, **{"x-ratelimit-reset": str(int(T0 + clock.now + 7))}))
    asyncio.run(b.pace())
    assert 6 <= sum(clock.slept) <= 8


def test_a_hold_and_the_budget_are_shared_by_the_accounts_of_a_token() -> None:
    budgets = RateBudgets()
    first, again = budgets.for_token("/run/secrets/a"), budgets.for_token("/run/secrets/a")
    other = budgets.for_token("/run/secrets/b")
    assert first is again
    assert first is not other
    first.hold(30)
    assert again.held_for > 29
    assert other.held_for == 0


def test_listeners_stop_when_told() -> None:
    b = RateBudget()
    seen: list[tuple[int, int]] = []
    stop = b.listen(lambda limit, remaining: seen.append((limit, remaining)))
    b.observe(headers(100, 99))
    stop()
    stop()  # twice is harmless
    b.observe(headers(100, 98))
    assert seen == [(100, 99)]


def test_simulator_limiter_counts_a_window_and_answers_429_beyond() -> None:
    now = [0.0]
    limiter = RateLimiter(3, 60, lambda: now[0])
    decisions = [limiter.take() for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert dict(decisions[2].headers)["x-ratelimit-remaining"] == "0"
    refused = dict(decisions[3].headers)
    assert (refused["retry-after"], refused["x-ratelimit-reset"]) == ("60", "60")
    now[0] = 45.0
    assert dict(limiter.take().headers)["retry-after"] == "15"
    now[0] = 60.0
    assert limiter.take().allowed
    with pytest.raises(ValueError, match="at least 1 request"):
        RateLimiter(0, 60, lambda: 0.0)


async def _no_wait(seconds: float) -> None:
    return None


def test_the_api_headers_reach_the_metrics_and_the_landing_state() -> None:
    async def scenario() -> None:
        fleet = Fleet(lambda: T0, servers=3, seed=2)
        limiter = RateLimiter(60, 60, lambda: T0)
        app = SimulatorApp(fleet, FaultSet(), "tok", rate_limit=limiter)
        token = TokenSource(Redactor(), token="tok")
        metrics = AccountMetrics()
        client = EvoticClient("http://sim/api/v1", token, timeout=5, user_agent="t",
                              observe=metrics.request, transport=httpx.ASGITransport(app=app),
                              sleep=_no_wait)  # fmt: skip
        account = Account(client, token, PollSettings(), metrics, clock=lambda: T0)
        assert metrics.registry.get_sample_value("evotic_api_rate_limit_requests") is None
        assert account.status().rate is None
        assert await account.poller.poll_once()
        assert metrics.registry.get_sample_value("evotic_api_rate_limit_requests") == 60
        assert metrics.registry.get_sample_value("evotic_api_rate_limit_remaining_requests") == 59
        assert account.status().rate == (60, 59)
        await account.stop()

    asyncio.run(scenario())
