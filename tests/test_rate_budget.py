"""The rate budget end to end, time compressed tenfold: a window of 6 s instead of a minute,
polls every 6 s, status sweeps every 30 s, 40 servers against 20 requests a window. The status
collector has to pause in every window; the listing polls still come on time and the API never
answers 429. ``python -m tests.rate_budget`` runs the full ten minutes."""

from __future__ import annotations

from pathlib import Path

import pytest

from .rate_budget import run

pytestmark = pytest.mark.e2e


def test_status_calls_keep_inside_the_budget_and_polls_keep_their_time(tmp_path: Path) -> None:
    result = run(tmp_path, seconds=48, servers=40, limit=20, window=6, poll_interval=6,
                 status_interval=30)  # fmt: skip
    assert result.answers_429 == 0
    assert result.paced, "the collector should have needed to pace itself"
    assert result.resumed
    assert result.servers_with_status == 40
    # 48 s of polls every 6 s, each on time (a poll is a second or so late at most).
    assert result.expected_listing_polls - 1 <= result.listing_polls
    assert result.largest_gap_between_polls <= 6 * 1.5
    # More status calls than one window could hold: the sweeps went on across windows.
    assert result.status_calls > 20
