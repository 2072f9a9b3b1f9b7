"""A rate limit as Laravel's ``throttle`` middleware enforces it, which Evotic's API runs on.

``limit`` requests per ``window`` seconds; a window begins with the first request after the
last one ended. Every answer says ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``; a
request over the limit gets 429 with ``Retry-After`` (seconds) and ``X-RateLimit-Reset`` (Unix
time), and is not served.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """Whether a request is served, and the headers its answer carries."""

    allowed: bool
    headers: tuple[tuple[str, str], ...]


class RateLimiter:
    """One client's window: ``take()`` once per API request."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        if limit < 1 or not 0 < window < math.inf:
            raise ValueError("a rate limit needs at least 1 request per positive window")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._ends = -math.inf
        self._used = 0

    def take(self) -> Decision:
        now = self._clock()
        if now >= self._ends:
            self._ends, self._used = now + self.window, 0
        if self._used >= self.limit:
            wait = max(1, math.ceil(self._ends - now))
            return Decision(False, (
                ("x-ratelimit-limit", str(self.limit)), ("x-ratelimit-remaining", "0"),
                ("retry-after", str(wait)), ("x-ratelimit-reset", str(math.ceil(self._ends))),
            ))  # fmt: skip
        self._used += 1
        left = str(self.limit - self._used)
        return Decision(True, (("x-ratelimit-limit", str(self.limit)),
                               ("x-ratelimit-remaining", left)))  # fmt: skip
