"""What one account's poller publishes: the last good snapshot and the last poll's outcome.

Only the poller builds these; everything downstream (the exposition cache, readiness, the
exporter's own metrics, the HTTP side) reads them and nobody changes them, so a scrape can read
the current ones without a lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.api.models import Server, ServerStatus
from exporter.settings.quotas import Quotas


def _no_statuses() -> Mapping[str, ServerStatus]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Snapshot:
    """Servers as listed, task statuses where collected, quotas, and when it was taken.

    ``rejected`` counts the listed records the poll set aside; ``kept`` how many of them are
    served from their last good record (they are among ``servers``).
    """

    servers: tuple[Server, ...]
    taken_at: float
    statuses: Mapping[str, ServerStatus] = field(default_factory=_no_statuses)
    quotas: Quotas = field(default_factory=lambda: Quotas({}))
    period: tuple[float, float] | None = None  # billing period start and end, Unix seconds
    rejected: int = 0
    kept: int = 0

    @property
    def listed(self) -> int:
        """Servers the API listed validly in the poll that took this snapshot."""
        return len(self.servers) - self.kept


@dataclass(frozen=True)
class Outcome:
    """How the last poll ended: when, how long it took, and why it failed (``reason``).

    ``reason`` is ``None`` for a success, else one of ``POLL_REASONS``; ``message`` is the
    error's one-line text for logs and ``/readyz``, never a label. ``phases`` are a successful
    poll's (phase, seconds) pairs.
    """

    finished_at: float
    duration: float
    reason: str | None = None
    message: str = ""
    phases: tuple[tuple[str, float], ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class PollState:
    """One account's published state: last good snapshot (if any) and last outcome (if any)."""

    snapshot: Snapshot | None = None
    outcome: Outcome | None = None

    @property
    def last_success(self) -> float | None:
        """When the last successful poll finished (Unix seconds): when its snapshot was taken."""
        return None if self.snapshot is None else self.snapshot.taken_at
