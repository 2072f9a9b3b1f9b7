"""Readiness and staleness, state by state, as README "Failure behaviour" describes them."""

from __future__ import annotations

from exporter.api.models import Server
from exporter.polling.health import assess
from exporter.polling.snapshot import Outcome, PollState, Snapshot

STALE_AFTER = 600.0
T0 = 1_700_000_000.0


def _snapshot(listed: int = 3, kept: int = 0, taken_at: float = T0) -> Snapshot:
    servers = tuple(Server(id=str(n), hostname=f"h{n}") for n in range(listed + kept))
    return Snapshot(servers=servers, taken_at=taken_at, rejected=kept, kept=kept)


def _success(at: float) -> Outcome:
    return Outcome(finished_at=at, duration=0.2, phases=(("fetch", 0.1),))


def _failure(at: float, reason: str = "server_error") -> Outcome:
    return Outcome(finished_at=at, duration=1.0, reason=reason, message="HTTP 503")


def test_before_the_first_poll() -> None:
    health = assess(PollState(), now=T0, stale_after=STALE_AFTER)
    assert (health.ready, health.reason) == (False, "first poll pending")
    assert health.snapshot is None
    assert health.servers == 0
    assert not health.up


def test_no_successful_poll_yet_names_the_last_error() -> None:
    health = assess(PollState(outcome=_failure(T0, "auth")), now=T0 + 5, stale_after=STALE_AFTER)
    assert (health.ready, health.reason) == (False, "no successful poll yet (last error: auth)")
    assert health.snapshot is None
    assert not health.up


def test_fresh_data_is_served_and_ready() -> None:
    snapshot = _snapshot()
    state = PollState(snapshot, _success(T0))
    health = assess(state, now=T0 + 59, stale_after=STALE_AFTER)
    assert (health.ready, health.reason) == (True, "ok")
    assert health.snapshot is snapshot
    assert health.servers == 3
    assert health.up


def test_failing_polls_keep_fresh_data_served() -> None:
    snapshot = _snapshot()
    state = PollState(snapshot, _failure(T0 + 120))
    health = assess(state, now=T0 + STALE_AFTER, stale_after=STALE_AFTER)
    assert health.ready
    assert health.snapshot is snapshot
    assert not health.up, "the last poll failed"


def test_data_turns_stale_just_after_the_limit() -> None:
    snapshot = _snapshot()
    state = PollState(snapshot, _failure(T0 + 540, "timeout"))
    assert assess(state, now=T0 + STALE_AFTER, stale_after=STALE_AFTER).ready
    health = assess(state, now=T0 + STALE_AFTER + 1, stale_after=STALE_AFTER)
    assert not health.ready
    assert health.reason == (
        "data is stale: last successful poll 601 s ago (limit 600 s, last error: timeout)"
    )
    assert health.snapshot is None
    assert health.servers == 0
    assert not health.up


def test_stale_without_an_error_says_none() -> None:
    # A success long ago and nothing since (the loop died, or the clock jumped).
    state = PollState(_snapshot(), _success(T0))
    health = assess(state, now=T0 + 3600, stale_after=STALE_AFTER)
    assert health.reason.endswith("last error: none)")
    # README "Failure behaviour": stale data means evotic_up 0 and evotic_servers 0, even
    # though the last poll there was succeeded.
    assert (health.up, health.servers) == (False, 0)


def test_recovery_is_ready_at_once() -> None:
    state = PollState(_snapshot(taken_at=T0 + 4000), _success(T0 + 4000))
    health = assess(state, now=T0 + 4001, stale_after=STALE_AFTER)
    assert (health.ready, health.up) == (True, True)


def test_servers_counts_every_exported_server_and_kept_those_on_their_last_good_record() -> None:
    # Two records set aside keep their last good data: they are exported, so they are counted.
    state = PollState(_snapshot(listed=3, kept=2), _success(T0))
    health = assess(state, now=T0, stale_after=STALE_AFTER)
    assert health.snapshot is not None
    assert (health.servers, health.kept) == (len(health.snapshot.servers), 2) == (5, 2)
    stale = assess(state, now=T0 + STALE_AFTER + 1, stale_after=STALE_AFTER)
    assert (stale.servers, stale.kept) == (0, 0)
