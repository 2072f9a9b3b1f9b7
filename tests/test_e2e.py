"""The exporter as a process against the simulator as a process, over real HTTP."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .processes import ROOT, exporter, simulator, wait_until
from .scrape import one, parse, scrape, values

pytestmark = pytest.mark.e2e
TOKEN = "e2e-token-7f3a"


def _state(sim_url: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{sim_url}/_simulator/state").json()  # type: ignore[no-any-return]


def _stats(sim_url: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{sim_url}/_simulator/stats").json()  # type: ignore[no-any-return]


def _args(sim_url: str, *extra: str) -> list[str]:
    return ["--api.url", f"{sim_url}/api/v1", "--poll.interval", "1", *extra]


def _polls(url: str) -> float:
    return one(scrape(url), "evotic_last_successful_poll_timestamp_seconds")


def _next_poll(url: str) -> None:
    """Wait until a poll that started after this call has succeeded."""
    seen = _polls(url)
    wait_until(lambda: _polls(url) > seen, what="the next poll")
    seen = _polls(url)
    wait_until(lambda: _polls(url) > seen, what="the poll after that")


def test_values_match_the_simulated_fleet(tmp_path: Path) -> None:
    with (
        simulator(tmp_path, "--servers", "30", token=TOKEN) as sim,
        exporter(tmp_path, *_args(sim.url), env={"EVOTIC_API_TOKEN": TOKEN}) as exp,
    ):
        samples = scrape(exp.url)
        truth = {str(s["id"]): s for s in _state(sim.url)["servers"]}
        assert one(samples, "evotic_up") == 1
        assert one(samples, "evotic_servers") == len(truth) == 30
        hostnames = values(samples, "evotic_server_info")
        assert set(hostnames) == set(truth)
        info = {s.labels["server_id"]: s.labels["hostname"] for s in samples
                if s.name == "evotic_server_info"}  # fmt: skip
        assert info == {k: v["hostname"] for k, v in truth.items()}
        running = values(samples, "evotic_server_running")
        assert running == {k: float(v["status"] == "started") for k, v in truth.items()}
        exceeded = {
            (s.labels["server_id"], s.labels["direction"]): s.value
            for s in samples if s.name == "evotic_server_traffic_limit_exceeded"
        }  # fmt: skip
        expected = {
            (k, d): float(v["traffic"][d]["is_exceeded"])
            for k, v in truth.items() if not v["usage_null"] for d in ("incoming", "outgoing")
        }  # fmt: skip
        assert exceeded == expected
        assert any(exceeded.values()), "the demo fleet should have a server over its limit"
        without_usage = {k for k, v in truth.items() if v["usage_null"]}
        assert without_usage, "the simulated fleet should have installing servers"
        traffic = values(samples, "evotic_server_traffic_bytes_total")
        assert not without_usage & set(traffic)
        assert one(samples, "evotic_exporter_build_info") == 1


def test_content_negotiation_compression_and_endpoints(tmp_path: Path) -> None:
    with (
        simulator(tmp_path, token=TOKEN) as sim,
        exporter(tmp_path, *_args(sim.url), env={"EVOTIC_API_TOKEN": TOKEN}) as exp,
    ):
        plain = httpx.get(f"{exp.url}/metrics")
        assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "evotic_server_info{" in plain.text
        om = httpx.get(
            f"{exp.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert om.text.endswith("# EOF\n")
        assert om.text.count("# EOF") == 1
        assert "# TYPE evotic_server_traffic_bytes counter" in om.text
        with httpx.stream("GET", f"{exp.url}/metrics", headers={"Accept-Encoding": "gzip"}) as raw:
            compressed = b"".join(raw.iter_raw())
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.headers["vary"] == "Accept, Accept-Encoding"
        assert int(raw.headers["content-length"]) == len(compressed)
        body = gzip.decompress(compressed).decode()
        assert body.startswith("# HELP evotic_server_info")
        assert "evotic_up 1.0" in body
        parse(body)
        assert httpx.get(f"{exp.url}/metrics", headers={"Accept-Encoding": "gzip;q=0"}
                         ).headers.get("content-encoding") is None  # fmt: skip
        head = httpx.head(f"{exp.url}/metrics")
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) > 1000
        landing = httpx.get(exp.url)
        assert landing.headers["content-type"].startswith("text/html")
        assert 'href="metrics"' in landing.text
        assert httpx.get(f"{exp.url}/healthz").status_code == 200
        assert httpx.get(f"{exp.url}/readyz").status_code == 200
        assert httpx.get(f"{exp.url}/nope").status_code == 404
        post = httpx.post(f"{exp.url}/metrics", content=b"x")
        assert post.status_code == 405
        assert post.headers["allow"] == "GET, HEAD"
        assert httpx.delete(f"{exp.url}/").status_code == 405


def test_deleted_and_renamed_servers_leave_no_series(tmp_path: Path) -> None:
    with (
        simulator(tmp_path, "--servers", "10", token=TOKEN) as sim,
        exporter(tmp_path, *_args(sim.url), env={"EVOTIC_API_TOKEN": TOKEN}) as exp,
    ):
        servers = _state(sim.url)["servers"]
        gone, renamed = str(servers[0]["id"]), str(servers[1]["id"])
        old_name = servers[1]["hostname"]
        assert httpx.delete(f"{sim.url}/_simulator/servers/{gone}").status_code < 300
        response = httpx.patch(f"{sim.url}/_simulator/servers/{renamed}",
                               json={"hostname": "renamed-host"})  # fmt: skip
        assert response.status_code < 300
        _next_poll(exp.url)
        samples = scrape(exp.url)
        assert not [s for s in samples if s.labels.get("server_id") == gone]
        assert not [s for s in samples if s.labels.get("hostname") == old_name]
        names = {s.labels["hostname"] for s in samples if s.labels.get("server_id") == renamed}
        assert names == {"renamed-host"}
        assert one(samples, "evotic_servers") == 9


def test_api_failure_keeps_last_snapshot_and_recovers(tmp_path: Path) -> None:
    with (
        simulator(tmp_path, token=TOKEN) as sim,
        exporter(tmp_path, *_args(sim.url), env={"EVOTIC_API_TOKEN": TOKEN}) as exp,
    ):
        before = values(scrape(exp.url), "evotic_server_info")
        httpx.post(
            f"{sim.url}/_simulator/faults",
            json={"kind": "server_error", "scope": "servers", "params": {"status": 503}},
        )
        wait_until(lambda: one(scrape(exp.url), "evotic_up") == 0, what="evotic_up 0")
        samples = scrape(exp.url)
        assert values(samples, "evotic_server_info") == before
        errors = values(samples, "evotic_poll_errors_total", key="reason")
        assert errors["server_error"] >= 1
        assert httpx.get(f"{exp.url}/readyz").status_code == 200
        httpx.delete(f"{sim.url}/_simulator/faults")
        wait_until(lambda: one(scrape(exp.url), "evotic_up") == 1, what="recovery")
        log = [json.loads(line) for line in exp.output().splitlines() if line.startswith("{")]
        failed = [e for e in log if e["event"] == "poll failed"]
        assert len(failed) == 1
        assert failed[0]["reason"] == "server_error"
        assert "503" in failed[0]["error"]
        assert [e for e in log if e["event"] == "poll recovered"]
        assert "Traceback" not in exp.output()


def test_api_load_does_not_grow_with_scrapers(tmp_path: Path) -> None:
    with (
        simulator(tmp_path, token=TOKEN) as sim,
        exporter(tmp_path, "--api.url", f"{sim.url}/api/v1", "--poll.interval", "30",
                 env={"EVOTIC_API_TOKEN": TOKEN}) as exp,
    ):  # fmt: skip
        listed = _stats(sim.url)["servers"]
        with httpx.Client() as client:
            for _ in range(100):
                assert client.get(f"{exp.url}/metrics").status_code == 200
        assert _stats(sim.url)["servers"] == listed == 1


def test_token_file_is_reread_every_poll(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token-1234\n")
    with (
        simulator(tmp_path, token=TOKEN) as sim,
        exporter(tmp_path, *_args(sim.url, "--api.token-file", str(token_file)),
                 wait_ready=False) as exp,
    ):  # fmt: skip
        wait_until(lambda: values(scrape(exp.url), "evotic_poll_errors_total", "reason")
                   .get("auth", 0) >= 1, what="an auth error")  # fmt: skip
        assert httpx.get(f"{exp.url}/readyz").status_code == 503
        assert "auth" in httpx.get(f"{exp.url}/readyz").text
        token_file.write_text(TOKEN + "\n")
        wait_until(lambda: httpx.get(f"{exp.url}/readyz").status_code == 200, what="readiness")
        assert one(scrape(exp.url), "evotic_up") == 1


def test_status_collector(tmp_path: Path) -> None:
    with (
        simulator(tmp_path, "--servers", "40", token=TOKEN) as sim,
        exporter(tmp_path, *_args(sim.url, "--collector.status",
                                  "--collector.status.interval", "1"),
                 env={"EVOTIC_API_TOKEN": TOKEN}) as exp,
    ):  # fmt: skip
        wait_until(lambda: values(scrape(exp.url), "evotic_server_processing"),
                   what="status series")  # fmt: skip
        samples = scrape(exp.url)
        processing = values(samples, "evotic_server_processing")
        assert set(processing) == set(values(samples, "evotic_server_info"))
        busy = {k for k, v in processing.items() if v == 1}
        progress = [s for s in samples if s.name == "evotic_server_progress_ratio"]
        assert busy, "the simulated fleet should have servers running a task"
        assert {s.labels["server_id"] for s in progress} <= busy
        assert all(0 <= s.value <= 1 and s.labels["task"] for s in progress)
        assert _stats(sim.url)["status"] >= 40


def test_promtool_finds_nothing_to_complain_about(tmp_path: Path) -> None:
    with (
        simulator(tmp_path, token=TOKEN) as sim,
        exporter(tmp_path, *_args(sim.url, "--collector.status", "--traffic.quota-bytes",
                                  "10TiB"), env={"EVOTIC_API_TOKEN": TOKEN}) as exp,
    ):  # fmt: skip
        body = httpx.get(f"{exp.url}/metrics").content
    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, "EVOTIC_API_TOKEN (--api.token)"),
        (["--poll.interval", "0"], {"EVOTIC_API_TOKEN": TOKEN}, "EVOTIC_POLL_INTERVAL"),
        (["--api.url", "ftp://x"], {"EVOTIC_API_TOKEN": TOKEN}, "EVOTIC_API_URL"),
        (["--api.token-file", "/nonexistent"], {}, "EVOTIC_API_TOKEN_FILE"),
        (["--bogus"], {}, "unrecognized arguments: --bogus"),
    ],
)
def test_bad_settings_exit_2_with_one_line(args: list[str], env: dict[str, str],
                                           expected: str) -> None:  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", **env}, cwd=ROOT,
                            timeout=30, check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert TOKEN not in result.stderr


def test_a_quota_file_mistake_exits_2_naming_the_file_and_the_key(tmp_path: Path) -> None:
    quotas = tmp_path / "quotas.yml"
    quotas.write_text("servers:\n  - hostname: [db-1, db-2]\n    quota: 1TiB\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--demo", "--traffic.quota-file", str(quotas)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=ROOT, timeout=30,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith(f"{quotas}: servers[0].hostname: must be a string")


def test_quota_file_rules_reach_the_exposition(tmp_path: Path) -> None:
    with simulator(tmp_path, "--servers", "6", token=TOKEN) as sim:
        first, second, third, *rest = _state(sim.url)["servers"]
        assert first["hostname"] != first["hostname"].upper()
        quotas = tmp_path / "quotas.yml"
        quotas.write_text(
            "default: {incoming: 3TB}\n"
            "servers:\n"
            f"  - hostname: '{first['hostname'].upper()}'\n    quota: {{outgoing: 1TB}}\n"
            f"  - id: {second['id']}\n    quota: {{incoming: null, outgoing: 2TB}}\n"
            f"  - id: '{third['id']}'\n    quota: {{incoming: null}}\n"
        )
        args = _args(sim.url, "--traffic.quota-bytes", "5TB", "--traffic.quota-file", str(quotas))
        with exporter(tmp_path, *args, env={"EVOTIC_API_TOKEN": TOKEN}) as exp:
            samples = scrape(exp.url)
    found = {
        (s.labels["server_id"], s.labels["direction"]): s.value
        for s in samples if s.name == "evotic_server_traffic_quota_bytes"
    }  # fmt: skip
    expected = {
        # A hostname matches in any case; the direction a rule leaves out keeps the default.
        (str(first["id"]), "incoming"): 3e12, (str(first["id"]), "outgoing"): 1e12,
        # null: no quota, so no series.
        (str(second["id"]), "outgoing"): 2e12,
        # The file's default names incoming only; outgoing falls back to the setting.
        (str(third["id"]), "outgoing"): 5e12,
    }  # fmt: skip
    for server in rest:
        expected[str(server["id"]), "incoming"] = 3e12
        expected[str(server["id"]), "outgoing"] = 5e12
    assert found == expected


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly_within_five_seconds(tmp_path: Path, signum: int) -> None:
    with (
        simulator(tmp_path, token=TOKEN) as sim,
        exporter(tmp_path, *_args(sim.url, "--api.timeout", "20"),
                 env={"EVOTIC_API_TOKEN": TOKEN}) as exp,
    ):  # fmt: skip
        # A poll is in flight (the API takes 10 s to answer) and a scrape is being served.
        httpx.post(
            f"{sim.url}/_simulator/faults", json={"kind": "timeout", "params": {"delay": 10}}
        )
        time.sleep(1.5)
        with httpx.Client() as client:
            assert client.get(f"{exp.url}/metrics").status_code == 200
            started = time.monotonic()
            exp.popen.send_signal(signum)
            code = exp.popen.wait(timeout=10)
        assert code == 0
        assert time.monotonic() - started < 5
        assert "Traceback" not in exp.output()


def test_paginated_listing_is_followed_to_the_last_page(tmp_path: Path) -> None:
    with (
        simulator(tmp_path, "--servers", "45", "--paginate", "--per-page", "7", token=TOKEN) as sim,
        exporter(tmp_path, *_args(sim.url), env={"EVOTIC_API_TOKEN": TOKEN}) as exp,
    ):
        samples = scrape(exp.url)
        truth = {str(s["id"]) for s in _state(sim.url)["servers"]}
        assert set(values(samples, "evotic_server_info")) == truth
        assert one(samples, "evotic_servers") == 45
        assert one(samples, "evotic_servers_rejected") == 0


def test_demo_mode_needs_no_token_and_shows_a_quota(tmp_path: Path) -> None:
    with exporter(tmp_path, "--demo", "--poll.interval", "1") as exp:
        samples = scrape(exp.url)
        assert one(samples, "evotic_up") == 1
        assert one(samples, "evotic_servers") == 25
        quotas = {s.value for s in samples if s.name == "evotic_server_traffic_quota_bytes"}
        assert quotas == {5 * 2**40}
        assert one(samples, "evotic_traffic_period_end_timestamp_seconds") > time.time()
