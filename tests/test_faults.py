"""The fault matrix: every switchable API fault against a running exporter, and the canary.

Each fault is switched on in the simulator, the exporter must report it with the right bounded
reason while still serving the last good data, and come back when the fault is cleared.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .processes import Process, exporter, simulator, wait_until
from .scrape import one, scrape, values

pytestmark = pytest.mark.e2e
CANARY = "CANARY-tok-5e1f9a7c3b"


@dataclass
class Stack:
    sim: Process
    exp: Process
    token_file: Path

    def fault(self, kind: str, **params: object) -> None:
        body = {"kind": kind, "scope": "servers", "params": params}
        response = httpx.post(f"{self.sim.url}/_simulator/faults", json=body)
        assert response.status_code == 201, response.text

    def clear(self) -> None:
        httpx.delete(f"{self.sim.url}/_simulator/faults").raise_for_status()

    def errors(self) -> dict[str, float]:
        return values(scrape(self.exp.url), "evotic_poll_errors_total", key="reason")

    def listings(self) -> int:
        return int(httpx.get(f"{self.sim.url}/_simulator/stats").json()["servers"])

    def truth(self) -> dict[str, str]:
        state = httpx.get(f"{self.sim.url}/_simulator/state").json()
        return {str(s["id"]): s["hostname"] for s in state["servers"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    path = tmp_path_factory.mktemp("faults")
    token_file = path / "token"
    token_file.write_text(CANARY)
    with (
        simulator(path, "--servers", "12", token=CANARY) as sim,
        exporter(path, "--api.url", f"{sim.url}/api/v1", "--api.token-file", str(token_file),
                 "--poll.interval", "1", "--api.timeout", "1", "--log.level", "debug") as exp,
    ):  # fmt: skip
        yield Stack(sim, exp, token_file)


def _served(stack: Stack) -> dict[str, str]:
    samples = scrape(stack.exp.url)
    return {s.labels["server_id"]: s.labels["hostname"] for s in samples
            if s.name == "evotic_server_info"}  # fmt: skip


def _fails_with(stack: Stack, reason: str) -> None:
    before_errors = stack.errors().get(reason, 0)
    before_data = _served(stack)
    wait_until(lambda: stack.errors().get(reason, 0) > before_errors, timeout=30,
               what=f"a poll error with reason {reason}")  # fmt: skip
    samples = scrape(stack.exp.url)
    assert one(samples, "evotic_up") == 0
    assert _served(stack) == before_data, "the last good snapshot must still be served"


def _recovers(stack: Stack) -> None:
    stack.clear()
    wait_until(lambda: one(scrape(stack.exp.url), "evotic_up") == 1, timeout=30, what="recovery")
    assert _served(stack) == stack.truth()


@pytest.mark.parametrize(
    ("kind", "params", "reason"),
    [
        ("server_error", {"status": 500}, "server_error"),
        ("server_error", {"status": 502}, "server_error"),
        ("unauthorized", {}, "auth"),
        ("forbidden", {}, "auth"),
        ("timeout", {"delay": 3}, "timeout"),
        ("malformed_json", {}, "invalid_response"),
        ("truncated_json", {}, "invalid_response"),
        ("html_200", {}, "invalid_response"),
        ("empty_200", {}, "invalid_response"),
        ("wrong_types", {}, "invalid_response"),
        ("missing_fields", {}, "invalid_response"),
        ("absurd_values", {}, "invalid_response"),
        ("huge_response", {"megabytes": 80}, "invalid_response"),
    ],
)
def test_fault_is_reported_and_survived(
    stack: Stack, kind: str, params: dict[str, object], reason: str
) -> None:
    stack.fault(kind, **params)
    try:
        _fails_with(stack, reason)
    finally:
        _recovers(stack)


def test_duplicate_ids_are_set_aside_and_the_first_record_kept(stack: Stack) -> None:
    truth = stack.truth()
    stack.fault("duplicate_ids")
    try:
        wait_until(lambda: one(scrape(stack.exp.url), "evotic_servers_rejected") > 0,
                   what="rejected records")  # fmt: skip
        samples = scrape(stack.exp.url)
        assert one(samples, "evotic_up") == 1
        assert _served(stack) == truth
        assert not [s for s in samples if s.labels.get("hostname", "").endswith("-twin")]
        # A duplicate's server is exported from its first record: counted, and not kept.
        assert one(samples, "evotic_servers") == len(truth)
        assert one(samples, "evotic_servers_kept") == 0
    finally:
        _recovers(stack)
    wait_until(lambda: one(scrape(stack.exp.url), "evotic_servers_rejected") == 0)


def test_rate_limit_holds_requests_until_retry_after(stack: Stack) -> None:
    stack.fault("rate_limited", retry_after=6)
    _fails_with(stack, "rate_limited")
    stack.clear()
    held_at = stack.listings()
    time.sleep(3)
    assert stack.listings() == held_at, "no request may be sent before Retry-After has passed"
    wait_until(lambda: one(scrape(stack.exp.url), "evotic_up") == 1, timeout=30, what="recovery")


def test_redirect_to_another_host_is_not_followed(stack: Stack) -> None:
    connections: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                connections.append(conn.recv(65536))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        stack.fault("redirect_other_host", location=f"http://127.0.0.1:{port}/steal")
        _fails_with(stack, "invalid_response")
        _recovers(stack)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert connections == []


def test_stale_data_is_dropped_after_stale_after(tmp_path: Path) -> None:
    with (
        simulator(tmp_path, token=CANARY) as sim,
        exporter(tmp_path, "--api.url", f"{sim.url}/api/v1", "--poll.interval", "1",
                 "--poll.stale-after", "4", env={"EVOTIC_API_TOKEN": CANARY}) as exp,
    ):  # fmt: skip
        assert values(scrape(exp.url), "evotic_server_info")
        httpx.post(f"{sim.url}/_simulator/faults", json={"kind": "server_error"})
        wait_until(lambda: httpx.get(f"{exp.url}/readyz").status_code == 503, timeout=30,
                   what="staleness")  # fmt: skip
        samples = scrape(exp.url)
        assert not [s for s in samples if "server_id" in s.labels]
        assert one(samples, "evotic_up") == 0
        assert one(samples, "evotic_servers") == 0
        assert one(samples, "evotic_last_successful_poll_timestamp_seconds") > 0
        assert "stale" in httpx.get(f"{exp.url}/readyz").text
        assert "server_error" in httpx.get(f"{exp.url}/readyz").text
        httpx.delete(f"{sim.url}/_simulator/faults")
        wait_until(lambda: httpx.get(f"{exp.url}/readyz").status_code == 200, timeout=30,
                   what="fresh data")  # fmt: skip
        assert values(scrape(exp.url), "evotic_server_info")


def test_the_token_appears_nowhere(stack: Stack) -> None:
    """Runs last in this module: the exporter has been through every fault above."""
    for kind in ("unauthorized", "malformed_json", "server_error"):
        stack.fault(kind)
        time.sleep(1.5)
        stack.clear()
    wait_until(lambda: one(scrape(stack.exp.url), "evotic_up") == 1, timeout=30)
    surfaces = {
        "metrics": httpx.get(f"{stack.exp.url}/metrics").text,
        "openmetrics": httpx.get(f"{stack.exp.url}/metrics",
                                 headers={"Accept": "application/openmetrics-text"}).text,
        "landing": httpx.get(stack.exp.url).text,
        "readyz": httpx.get(f"{stack.exp.url}/readyz").text,
        "healthz": httpx.get(f"{stack.exp.url}/healthz").text,
        "cmdline": Path(f"/proc/{stack.exp.popen.pid}/cmdline").read_bytes().decode(),
        "logs": stack.exp.output(),
    }  # fmt: skip
    for name, text in surfaces.items():
        assert CANARY not in text, f"the token leaked into {name}"
    log = [json.loads(line) for line in surfaces["logs"].splitlines() if line.startswith("{")]
    assert any(entry["level"] == "debug" for entry in log), "debug logging should be on"
    assert any(entry.get("reason") == "auth" for entry in log)
