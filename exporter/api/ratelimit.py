"""The API's rate limit as its answers state it, and the pacing of the requests that can wait.

Laravel APIs such as Evotic's send ``X-RateLimit-Limit`` (requests per window) and
``X-RateLimit-Remaining`` with every answer, and ``Retry-After`` (with ``X-RateLimit-Reset``, a
Unix time) with a 429. The window's length is not sent: it is taken as a minute, Laravel's
default, and learnt anew whenever the remaining count goes up (a new window has begun).

Listing polls are never held back here: they come first. The status collector asks ``pace()``
before each call and never spends the last ``reserve`` (20 %) of a window's budget: it waits
until the window resets, then goes on. Accounts that share a token share one ``RateBudget``, so
the same holds across them. A 429's ``Retry-After`` holds every request of every account that
shares the budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

RESERVE = 0.2
WINDOW = 60.0
RECHECK = 1.0  # seconds between two looks at the budget while pacing

Listener = Callable[[int, int], None]


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


class RateBudget:
    """The last limit and remaining count seen, when the window is expected to reset, and a 429's
    hold. ``limit`` and ``remaining`` are ``None`` until the API has sent them."""

    def __init__(
        self,
        *,
        reserve: float = RESERVE,
        window: float = WINDOW,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._reserve = reserve
        self._window = window
        self._monotonic = monotonic
        self._wall = wall
        self._sleep = sleep
        self._log = logger or structlog.get_logger("exporter.api")
        self.limit: int | None = None
        self.remaining: int | None = None
        self._granted = 0  # pace() grants since the last answer said what remains
        self._reset_at = 0.0  # monotonic: when the window is expected to begin anew
        self.held_until = 0.0  # monotonic: a 429's Retry-After; nothing is sent before
        self._listeners: list[Listener] = []
        self._pacing = False

    def listen(self, listener: Listener) -> Callable[[], None]:
        """``listener(limit, remaining)`` after every answer that states them; returns what
        stops it."""
        self._listeners.append(listener)
        if self.limit is not None and self.remaining is not None:
            listener(self.limit, self.remaining)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    @property
    def held_for(self) -> float:
        """Seconds until a 429 allows the next request (0 when none is pending)."""
        return max(0.0, self.held_until - self._monotonic())

    def hold(self, seconds: float) -> None:
        self.held_until = max(self.held_until, self._monotonic() + seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """What an answer's headers say of the window."""
        limit = _count(headers.get("x-ratelimit-limit"))
        remaining = _count(headers.get("x-ratelimit-remaining"))
        now = self._monotonic()
        reset = _count(headers.get("x-ratelimit-reset"))
        if reset is not None:
            self._reset_at = now + max(0.0, reset - self._wall())
        if limit is None or remaining is None:
            return
        known = self.remaining is not None and self.limit == limit
        began = not known or (self.remaining is not None and remaining > self.remaining)
        if reset is None and (began or now >= self._reset_at):
            # The first answer, or more left than before: a window has just begun, as far as
            # can be known. Or the reset expected by now did not come: it comes later than
            # thought, and until an answer shows it, a whole window is assumed to be left.
            self._reset_at = now + self._window
        self.limit, self.remaining, self._granted = limit, min(remaining, limit), 0
        for listener in self._listeners:
            listener(limit, self.remaining)

    def _left(self) -> int | None:
        if self.limit is None or self.remaining is None:
            return None
        if self._monotonic() >= self._reset_at:
            return self.limit - self._granted  # the window has reset, by the clock
        return self.remaining - self._granted

    async def pace(self) -> None:
        """Return when a request that can wait may be sent without touching the reserve."""
        while True:
            left = self._left()
            if left is None or self.limit is None:
                return  # no limit stated (yet): nothing to pace by
            floor = math.ceil(self.limit * self._reserve)
            if left > floor:
                self._granted += 1
                if self._pacing:
                    self._pacing = False
                    self._log.info("status calls resumed", remaining=left, limit=self.limit)
                return
            wait = max(self._reset_at - self._monotonic(), 0.0)
            if not self._pacing:
                self._pacing = True
                self._log.info("pacing status calls until the rate limit window resets",
                               remaining=left, limit=self.limit, reserve=floor,
                               seconds=round(wait, 1))  # fmt: skip
            if wait <= 0:
                # The expected reset has passed: the next answer will say what is left.
                self._reset_at = self._monotonic() + self._window
                self.remaining = self.limit
                self._granted = 0
                continue
            # A listing poll's answer may show the new window before the expected reset.
            await self._sleep(min(wait, RECHECK))


class RateBudgets:
    """One budget per token: accounts that share a token share its rate limit."""

    def __init__(self, make: Callable[[], RateBudget] = RateBudget) -> None:
        self._make = make
        self._budgets: dict[str, RateBudget] = {}

    def for_token(self, key: str) -> RateBudget:
        """The budget of the token known as ``key`` (its file's path, or a digest of it)."""
        if key not in self._budgets:
            self._budgets[key] = self._make()
        return self._budgets[key]
