"""The poll loop's timing: start-up jitter, back-off after failures, Retry-After holds.

The client is real; only its transport is scripted, and the loop's sleep is recorded instead
of waited for, so the schedule itself is what is asserted.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from exporter.api.client import EvoticClient
from exporter.api.token import TokenSource
from exporter.logging import Redactor
from exporter.poller import Poller, PollSettings


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
