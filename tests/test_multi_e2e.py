"""Several accounts, end to end: the exporter as a process polling two simulated APIs with
different tokens, a real Prometheus scraping them through the multi-target configuration, real
SIGHUPs and ``POST /-/reload``."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from .processes import Process, exporter, simulator, wait_until
from .prometheus_server import prometheus
from .scrape import one, parse, scrape

pytestmark = pytest.mark.e2e
TOKENS = {"prod": "multi-prod-token-51c2", "staging": "multi-staging-token-8e07"}
SIZES = {"prod": 4, "staging": 6}


@contextmanager
def apis(tmp_path: Path) -> Iterator[dict[str, Process]]:
    """A simulated API per account, each with its own fleet and token."""
    with ExitStack() as stack:
        started = {}
        for index, name in enumerate(TOKENS):
            args = ("--servers", str(SIZES[name]), "--seed", str(20 + index))
            started[name] = stack.enter_context(simulator(tmp_path, *args, token=TOKENS[name]))
        yield started


def write_accounts(tmp_path: Path, sims: dict[str, Process], *names: str, extra: str = "") -> Path:
    accounts = {}
    for name in names:
        token = tmp_path / f"{name}.token"
        token.write_text(TOKENS[name] + "\n")
        token.chmod(0o600)
        accounts[name] = {"token_file": str(token), "api_url": f"{sims[name].url}/api/v1",
                          "poll_interval": 1}  # fmt: skip
    path = tmp_path / "accounts.yml"
    path.write_text(json.dumps({"accounts": accounts}) + extra)
    return path


def probe(url: str, target: str) -> httpx.Response:
    return httpx.get(f"{url}/probe", params={"target": target})


def multi_target_jobs(address: str, *names: str) -> list[dict[str, Any]]:
    """The scrape configuration README "Several accounts" gives, for this exporter."""
    return [
        {"job_name": "evotic-exporter", "static_configs": [{"targets": [address]}]},
        {
            "job_name": "evotic",
            "metrics_path": "/probe",
            "static_configs": [{"targets": list(names)}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "account"},
                {"target_label": "__address__", "replacement": address},
            ],
        },
    ]


def test_prometheus_scrapes_each_account_as_its_own_target(tmp_path: Path) -> None:
    with apis(tmp_path) as sims:
        config = write_accounts(tmp_path, sims, "prod", "staging")
        with exporter(tmp_path, "--config.file", str(config)) as proc:
            address = proc.url.removeprefix("http://")
            jobs = multi_target_jobs(address, "prod", "staging")
            (tmp_path / "prom").mkdir()
            with prometheus(tmp_path / "prom", [], scrape_configs=jobs) as prom:

                def both_up() -> bool:
                    up = prom.query('up{job="evotic"}')
                    return {r["metric"]["account"]: r["value"][1] for r in up} == {
                        "prod": "1", "staging": "1"}  # fmt: skip

                wait_until(both_up, timeout=30, what="both accounts scraped")

                def counted() -> dict[str, int]:
                    found = prom.query('count by (account) (evotic_server_info{job="evotic"})')
                    return {r["metric"]["account"]: int(r["value"][1]) for r in found}

                wait_until(lambda: counted() == SIZES, timeout=30, what="each account's servers")

                # The /metrics job is scraped on its own schedule: wait for its first scrape.
                def watched() -> set[str]:
                    health = prom.query('evotic_up{job="evotic-exporter"}')
                    return {r["metric"]["account"] for r in health}

                wait_until(lambda: watched() == {"prod", "staging"}, timeout=30,
                           what="every account's health on /metrics")  # fmt: skip
                # /metrics of a multi-account exporter carries no per-server series.
                assert prom.query('evotic_server_info{job="evotic-exporter"}') == []

                # One account broken: the other keeps fresh data, each says its own state.
                httpx.post(f"{sims['staging'].url}/_simulator/faults",
                           json={"kind": "server_error"}).raise_for_status()  # fmt: skip
                wait_until(lambda: one(parse(probe(proc.url, "staging").text), "evotic_up") == 0,
                           timeout=20, what="staging down")  # fmt: skip
                first = one(parse(probe(proc.url, "prod").text),
                            "evotic_last_successful_poll_timestamp_seconds")  # fmt: skip
                wait_until(lambda: one(parse(probe(proc.url, "prod").text),
                                       "evotic_last_successful_poll_timestamp_seconds") > first,
                           timeout=20, what="prod still polling")  # fmt: skip
                assert one(parse(probe(proc.url, "prod").text), "evotic_up") == 1

                def staging_down_in_prometheus() -> bool:
                    found = prom.query('evotic_up{job="evotic"} == 0')
                    return [r["metric"]["account"] for r in found] == ["staging"]

                wait_until(staging_down_in_prometheus, timeout=30, what="staging down in prom")
            readyz = httpx.get(f"{proc.url}/readyz")
            assert readyz.text.startswith("prod: ")
            assert "\nstaging: " in readyz.text
        for token in TOKENS.values():
            assert token not in proc.output()


def _requests(url: str, target: str) -> float:
    samples = parse(probe(url, target).text)
    return sum(s.value for s in samples if s.name == "evotic_api_requests_total")


def _reload_ok(url: str) -> float:
    return one(scrape(url), "evotic_config_last_reload_successful")


def test_reloads_add_keep_remove_and_survive_a_broken_file(tmp_path: Path) -> None:
    with apis(tmp_path) as sims:
        config = write_accounts(tmp_path, sims, "prod")
        with exporter(tmp_path, "--config.file", str(config), "--web.enable-lifecycle") as proc:
            wait_until(lambda: _requests(proc.url, "prod") >= 2, what="prod polling")
            assert probe(proc.url, "staging").status_code == 404

            # SIGHUP adds staging; prod keeps its poller (its counters go on, not from 0).
            write_accounts(tmp_path, sims, "prod", "staging")
            before = _requests(proc.url, "prod")
            proc.popen.send_signal(signal.SIGHUP)
            wait_until(lambda: probe(proc.url, "staging").status_code == 200
                       and one(parse(probe(proc.url, "staging").text), "evotic_up") == 1,
                       timeout=20, what="staging added")  # fmt: skip
            assert _requests(proc.url, "prod") >= before
            assert '"added": "staging"' in proc.output()
            assert '"kept": "prod"' in proc.output()

            # POST /-/reload removes prod: its probe and its labelled metrics are gone.
            write_accounts(tmp_path, sims, "staging")
            answer = httpx.post(f"{proc.url}/-/reload")
            assert (answer.status_code, answer.text) == (200, "reloaded\n")
            assert probe(proc.url, "prod").status_code == 404
            assert 'account="prod"' not in httpx.get(f"{proc.url}/metrics").text
            assert httpx.get(f"{proc.url}/readyz").text.startswith("staging: ")

            # A broken file changes nothing; the metric says so until a good load.
            config.write_text(config.read_text().replace('{"accounts"', '{"extra": 1, "accounts"'))
            failed = httpx.post(f"{proc.url}/-/reload")
            assert failed.status_code == 500
            assert failed.text.startswith("reload failed: invalid setting EVOTIC_CONFIG_FILE")
            assert "extra: unknown key" in failed.text
            assert failed.text.count("\n") == 1
            assert _reload_ok(proc.url) == 0
            proc.popen.send_signal(signal.SIGHUP)
            wait_until(lambda: proc.output().count("reload failed") >= 2, what="SIGHUP logged")
            assert probe(proc.url, "staging").status_code == 200
            assert probe(proc.url, "prod").status_code == 404

            write_accounts(tmp_path, sims, "staging")
            assert httpx.post(f"{proc.url}/-/reload").status_code == 200
            assert _reload_ok(proc.url) == 1
        for token in TOKENS.values():
            assert token not in proc.output()


def test_single_account_reload_rereads_the_quota_file(tmp_path: Path) -> None:
    quotas = tmp_path / "quotas.yml"
    quotas.write_text("default: 1TiB\n")
    with apis(tmp_path) as sims:
        token = tmp_path / "token"
        token.write_text(TOKENS["prod"])
        token.chmod(0o600)
        with exporter(tmp_path, "--api.url", f"{sims['prod'].url}/api/v1", "--api.token-file",
                      str(token), "--poll.interval", "1", "--traffic.quota-file",
                      str(quotas)) as proc:  # fmt: skip

            def quota() -> set[float]:
                return {s.value for s in scrape(proc.url)
                        if s.name == "evotic_server_traffic_quota_bytes"}  # fmt: skip

            assert quota() == {2.0**40}
            quotas.write_text("default: 2TiB\n")
            proc.popen.send_signal(signal.SIGHUP)
            wait_until(lambda: quota() == {2.0**41}, timeout=20, what="the new quota")
            # Without --web.enable-lifecycle the endpoint refuses.
            assert httpx.post(f"{proc.url}/-/reload").status_code == 403
            quotas.write_text("default: lots\n")
            proc.popen.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload failed" in proc.output(), what="the failed reload logged")
            assert quota() == {2.0**41}
            assert one(scrape(proc.url), "evotic_config_last_reload_successful") == 0
