"""A short soak in CI: churn and faults for a minute, series, fds and memory must stay flat.

The long run is ``python -m tests.soak --duration 600`` (see the README).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .soak import Sample, assess, soak

pytestmark = pytest.mark.e2e


def test_short_soak_stays_flat(tmp_path: Path) -> None:
    samples: list[Sample] = []
    verdict = soak(duration=60, servers=100, fault_period=4, workdir=tmp_path, out=samples,
                   echo=False)  # fmt: skip
    assert len(samples) >= 30
    assert verdict.flat, verdict.reasons
    assert {s.server_series > 0 for s in samples} == {True}


def _sample(n: int, series: int = 100, fds: int = 20, rss: int = 50_000) -> Sample:
    return Sample(seconds=n, series=series, server_series=series, fds=fds, rss_kib=rss,
                  up=float(n % 2))  # fmt: skip


def test_assess_flags_growth() -> None:
    flat = [_sample(n) for n in range(30)]
    assert assess(flat).flat
    leaking_fds = [_sample(n, fds=20 + n) for n in range(30)]
    assert "open file descriptors grew" in assess(leaking_fds).reasons
    leaking_series = [_sample(n, series=100 + 10 * n) for n in range(30)]
    assert "server series grew" in assess(leaking_series).reasons
    leaking_rss = [_sample(n, rss=50_000 + 2_000 * n) for n in range(30)]
    assert any("resident memory" in r for r in assess(leaking_rss).reasons)
