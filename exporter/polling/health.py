"""Readiness and staleness: a pure function of the published state, the time and one setting.

README "Failure behaviour" describes these states; ``tests/test_health.py`` walks through each
with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.polling.snapshot import PollState, Snapshot


@dataclass(frozen=True)
class Health:
    """What a scrape serves and what ``/readyz`` says.

    ``snapshot`` is the snapshot whose series are served, ``None`` when there is none yet or
    it is too old to trust; ``servers`` is what ``evotic_servers`` reports: every server of the
    served snapshot, so every server with per-server series; ``kept`` is how many of them are
    served from their last valid record (``evotic_servers_kept``). ``up`` is what ``evotic_up``
    reports: the last poll succeeded and its data is being served (a success too old to trust
    is no longer up).
    """

    ready: bool
    reason: str
    snapshot: Snapshot | None
    up: bool = False

    @property
    def servers(self) -> int:
        return 0 if self.snapshot is None else len(self.snapshot.servers)

    @property
    def kept(self) -> int:
        return 0 if self.snapshot is None else self.snapshot.kept


def assess(state: PollState, now: float, stale_after: float) -> Health:
    """Ready while a successful poll younger than ``stale_after`` seconds is being served."""
    outcome = state.outcome
    failing = None if outcome is None else outcome.reason
    if state.snapshot is None:
        reason = f"no successful poll yet (last error: {failing})" if failing else (
            "first poll pending"
        )  # fmt: skip
        return Health(False, reason, None)
    age = now - state.snapshot.taken_at
    if age > stale_after:
        reason = (
            f"data is stale: last successful poll {age:.0f} s ago "
            f"(limit {stale_after:.0f} s, last error: {failing or 'none'})"
        )
        return Health(False, reason, None)
    return Health(True, "ok", state.snapshot, up=failing is None)
