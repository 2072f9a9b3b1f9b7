"""The benchmark harness's smoke run: it has to keep working, whatever the numbers are.

No timing is asserted here (CI machines vary too much); what is asserted is that every figure
the report promises is there and sane, and that nginx served the exporter's own bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODES = ("plain_1", "plain_4", "gzip_1", "gzip_4")

Smoke = tuple[dict[str, Any], str]  # the report, and what the harness printed

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("nginx") is None and not os.environ.get("CI"),
        reason="nginx is not installed (tests/run.sh installs it; CI always has it)",
    ),
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    output = tmp_path_factory.mktemp("benchmark")
    finished = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--smoke", "--output", str(output), "--no-readme"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return output, finished.stdout


@pytest.fixture(scope="module")
def smoke(smoke_run: tuple[Path, str]) -> Smoke:
    output, stdout = smoke_run
    return json.loads((output / "latest.json").read_text()), stdout


@pytest.fixture(scope="module")
def accounts(smoke_run: tuple[Path, str]) -> Smoke:
    """The several-accounts part of the smoke run: 3 accounts of 100 servers."""
    output, stdout = smoke_run
    return json.loads((output / "accounts.json").read_text()), stdout


def _sane(stats: dict[str, Any]) -> None:
    assert stats["requests"] > 0, stats
    assert stats["errors"] == 0, stats
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert stats["body_bytes"] > 0


def test_every_scrape_mode_is_measured_for_every_server(smoke: Smoke) -> None:
    size = smoke[0]["sizes"]["1000"]
    for target in ("exporter", "static", "reference"):
        for mode in MODES:
            stats = size["scrape"][target][mode]
            assert stats["requests"] > 0, (target, mode, stats)
            assert stats["errors"] == 0, (target, mode, stats)
            assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p99_ms"] <= stats["max_ms"]
            assert stats["body_bytes"] > 0
    for mode in MODES:
        ratios = size["ratios"][mode]
        assert ratios["median_vs_static"] > 0
        assert ratios["reference_median_vs_ours"] > 0
        assert ratios["p99_vs_median"] >= 1


def test_nginx_serves_the_exporters_own_bytes(smoke: Smoke) -> None:
    payload = smoke[0]["sizes"]["1000"]["payload"]
    assert payload["static_identical"] is True
    assert payload["gzip_decodes_to_same_series"] is True
    assert 0 < payload["gzip_bytes"] < payload["plain_bytes"]
    # The reference exports the same series (give or take the exporter's own metrics).
    assert abs(payload["reference_samples"] - payload["samples"]) < 0.01 * payload["samples"]


def test_poll_cpu_phases_and_memory_are_reported(smoke: Smoke) -> None:
    report, stdout = smoke
    size = report["sizes"]["1000"]
    cpu = size["cpu"]
    for key in ("validate_cpu_s", "render_cpu_s", "openmetrics_cpu_s", "gzip_cpu_s"):
        assert cpu[key] > 0, key
    assert cpu["validate_render_cpu_s"] >= cpu["validate_cpu_s"]
    assert cpu["samples"] > 10 * 1000
    poll = size["poll"]
    assert poll["polls"] >= 2
    assert set(poll["phases_s"]) >= {"fetch", "validate", "render"}
    assert all(seconds >= 0 for seconds in poll["phases_s"].values())
    assert poll["phases_s"]["validate"] > 0
    assert poll["phases_s"]["render"] > 0
    assert all(run["requests"] > 0 for run in poll["under_load"].values())
    assert size["peak_rss_mb"]["exporter"] > 10
    assert size["peak_rss_mb"]["reference"] > 10
    assert size["first_answer_after_poll_ms"]["gzip"] > 0
    machine = report["machine"]
    assert all(machine[key] for key in ("cpu", "cores", "memory_gib", "python", "nginx"))
    assert "| 1,000 | plain x1 |" in stdout


def test_every_account_is_scraped_next_to_nginx_serving_its_own_bytes(accounts: Smoke) -> None:
    report = accounts[0]
    assert (report["accounts"], report["servers_per_account"]) == (3, 100)
    per_account = report["per_account"]
    assert list(per_account) == ["account-01", "account-02", "account-03"]
    for name, account in per_account.items():
        payload = account["payload"]
        assert payload["static_identical"] is True, name
        assert payload["gzip_decodes_to_same_series"] is True, name
        assert 0 < payload["gzip_bytes"] < payload["plain_bytes"]
        assert payload["samples"] > 10 * 100
        for target in ("exporter", "static"):
            for mode in MODES:
                _sane(account["scrape"][target][mode])
        for mode in MODES:
            assert account["ratios"][mode]["median_vs_static"] > 0
            assert account["ratios"][mode]["p99_vs_median"] >= 1
        assert account["first_poll_s"] > 0
        assert account["poll_under_load_s"] > 0
    # Each account was served its own fleet, not one account's servers under every name.
    assert len({a["payload"]["series_sha256"] for a in per_account.values()}) == 3
    _sane(report["healthz"])


def test_the_worst_account_and_the_goals_are_reported(accounts: Smoke) -> None:
    report, stdout = accounts
    per_account = report["per_account"]
    assert set(report["worst"]) == set(MODES)
    for mode, worst in report["worst"].items():
        ratios = {name: a["ratios"][mode]["median_vs_static"] for name, a in per_account.items()}
        assert worst["median_vs_static"] == max(ratios.values())
        assert ratios[worst["median_account"]] == worst["median_vs_static"]
        assert worst["p99_account"] in per_account
    goals = {goal["target"]: goal for goal in report["goals"]}
    assert len(goals) == len(MODES) + 1
    for goal in goals.values():
        assert goal["measured"] > 0
        assert goal["met"] == (goal["measured"] <= goal["limit"])
    assert goals["peak RSS"]["limit"] == 130
    rss = report["peak_rss_mb"]
    assert rss["exporter"] == max(rss["exporter_scrapes_only"], rss["exporter_polls_under_scrapes"])
    assert rss["exporter_scrapes_only"] > 10
    poll = report["poll"]
    assert poll["every_account_polled"] is True
    for run in poll["under_load"].values():
        assert run["requests"] > 0, run
        assert run["errors"] == 0, run
    assert "| account-01 |" in stdout
    assert "**Goals** (3 accounts of 100 servers in one process)" in stdout


def test_the_servers_floor_serves_the_first_accounts_bytes_and_is_reported(
    accounts: Smoke,
) -> None:
    report, stdout = accounts
    assert report["floor_identical"] is True
    floor = report["floor"]
    assert floor["account"] == "account-01"
    scrape = report["per_account"]["account-01"]["scrape"]
    assert set(floor["modes"]) == set(MODES)
    for mode, figures in floor["modes"].items():
        _sane(scrape["floor"][mode])
        assert figures["median_ms"] == scrape["floor"][mode]["median_ms"]
        expected = scrape["exporter"][mode]["median_ms"] / figures["median_ms"]
        assert figures["exporter_vs_floor"] == round(expected, 2)
    assert "floor" not in report["per_account"]["account-02"]["scrape"]
    assert "**The server's floor.**" in stdout
