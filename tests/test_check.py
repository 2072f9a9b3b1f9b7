"""``evotic-exporter check``: one listing call per account, and the table or JSON it prints.

The fast lane checks the summary, the table and the JSON against the simulator's app through
``httpx.ASGITransport`` and scripted transports, and runs the command in process (``--demo``,
and simulators on sockets of this process). The end-to-end lane runs the command as a process
against simulator processes and compares what it prints with the simulator's own account of its
fleet (``/_simulator/state``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter import __version__
from exporter.api.client import EvoticClient, RetryPolicy, parse_listing_page
from exporter.api.token import TokenSource
from exporter.cli import main
from exporter.commands.check import (
    COLUMNS,
    AccountCheck,
    Failure,
    FleetSummary,
    QuotaUse,
    RequestCodes,
    check_all,
    check_listing,
    render_table,
    report,
    summarize,
    to_json,
)
from exporter.runtime.logs import REDACTED, Redactor
from exporter.service.connect import DEMO_QUOTA_BYTES
from exporter.settings.loading import PROG, load
from exporter.settings.quotas import Quotas, Rule
from simulator import FaultSet, Fleet, SimulatorApp, SimulatorOptions, start_simulator

from .processes import ROOT, free_port, simulator

CANARY = "canary-check-token-7f3a9c"
SIM_TOKEN = "check-sim-token"
T0 = 1_700_000_000.0
TIB = 2.0**40

Json = dict[str, Any]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("EVOTIC_")]:
        monkeypatch.delenv(name)


async def _no_wait(seconds: float) -> None:
    return None


def _client(transport: httpx.AsyncBaseTransport, token: TokenSource,
            codes: RequestCodes) -> EvoticClient:  # fmt: skip
    return EvoticClient("http://sim/api/v1", token, timeout=5, user_agent="t", observe=codes,
                        transport=transport, sleep=_no_wait)  # fmt: skip


def _check(
    transport: httpx.AsyncBaseTransport,
    token: TokenSource,
    quotas: Quotas | None = None,
    deadline: float = 30.0,
) -> AccountCheck:
    async def scenario() -> AccountCheck:
        codes = RequestCodes()
        client = _client(transport, token, codes)
        try:
            return await check_listing("acct", client, token, quotas or Quotas({}), codes,
                                       deadline=deadline)  # fmt: skip
        finally:
            await client.aclose()

    return asyncio.run(scenario())


def _token(value: str = SIM_TOKEN) -> TokenSource:
    return TokenSource(Redactor(), token=value)


# ------------------------------------------------------------------ what the fleet says


def _state_summary(state: Json, quota: float) -> tuple[Counter[str], int, list[str]]:
    """From the simulator's truth: counts by status, servers the API flags over their limit,
    and the five fullest servers' hostnames at ``quota`` per direction.

    A server without usage data (``usage_null``) is listed without traffic, so the API flags
    nothing for it and it has no traffic to hold against a quota.
    """
    by_status = Counter(server["status"] for server in state["servers"])
    shown = [server for server in state["servers"] if not server["usage_null"]]
    over = sum(any(flow["is_exceeded"] for flow in s["traffic"].values()) for s in shown)
    fullest = sorted(shown, key=lambda s: -max(f["value"] for f in s["traffic"].values()))
    return by_status, over, [server["hostname"] for server in fullest[:5]]


def test_summary_of_the_sample_listing(sample_listing: bytes) -> None:
    raw = {str(record["id"]): record for record in json.loads(sample_listing)}
    servers = parse_listing_page(sample_listing).servers
    quotas = Quotas({"incoming": 4e9, "outgoing": 2e9},
                    rules=(Rule(quota={"outgoing": 1e9}, hostname="サーバー-*"),))  # fmt: skip
    summary = summarize(servers, quotas, set_aside=2)

    assert summary.servers == len(raw)
    assert summary.set_aside == 2
    assert summary.by_status == Counter(record["status"] for record in raw.values())
    flagged = [
        record
        for record in raw.values()
        if record["usage"]
        and any((flow or {}).get("is_exceeded") for flow in record["usage"]["traffic"].values())
    ]
    assert summary.over_limit == len(flagged) == 1

    # Server 1, both directions against the default: incoming is the fuller one. Server 3 has
    # only its rule's outgoing quota and no incoming data. Server 2 lists no usage at all.
    one = raw["1"]["usage"]["traffic"]
    three = raw["3"]["usage"]["traffic"]
    assert summary.top_quota_used == (
        QuotaUse("1", raw["1"]["hostname"], "incoming", one["incoming"]["value"], 4e9),
        QuotaUse("3", raw["3"]["hostname"], "outgoing", three["outgoing"]["value"], 1e9),
    )
    assert summary.top_quota_used[0].ratio == one["incoming"]["value"] / 4e9
    assert summary.over_quota == 0
    # A quota under what server 1 used outgoing puts it over.
    assert summarize(servers, Quotas({"outgoing": 1e9})).over_quota == 1


def test_summary_without_quotas_has_no_quota_figures(sample_listing: bytes) -> None:
    summary = summarize(parse_listing_page(sample_listing).servers, Quotas({}))
    assert summary.over_quota is None
    assert summary.top_quota_used == ()
    assert summary.over_limit == 1


def test_summary_ranks_the_five_fullest_of_a_fleet_as_its_state_says() -> None:
    fleet = Fleet(lambda: T0, servers=40, seed=7)
    app = SimulatorApp(fleet, FaultSet(), SIM_TOKEN, paginate=True, per_page=6)
    checked = _check(httpx.ASGITransport(app=app), _token(), Quotas(dict.fromkeys(
        ("incoming", "outgoing"), 5 * TIB)))  # fmt: skip

    by_status, over, top = _state_summary(fleet.state(), 5 * TIB)
    assert checked.ok
    assert checked.fleet is not None
    assert checked.fleet.servers == 40
    assert checked.fleet.by_status == by_status
    assert checked.fleet.over_limit == over
    assert [use.hostname for use in checked.fleet.top_quota_used] == top
    assert (checked.api_reachable, checked.auth_ok) == (True, True)
    # One listing call: its seven pages and nothing else.
    assert app.stats.by_endpoint == Counter({"servers": 7})


# ------------------------------------------------------------------ why an account failed


def test_a_rejected_token_says_so_and_never_shows_the_token() -> None:
    app = SimulatorApp(Fleet(lambda: T0, servers=3), FaultSet(), SIM_TOKEN)
    checked = _check(httpx.ASGITransport(app=app), _token(CANARY))
    assert checked.failure == Failure(
        "auth", "HTTP 401: token rejected (from the configured token)"
    )
    assert (checked.api_reachable, checked.auth_ok, checked.fleet) == (True, False, None)
    assert app.stats.by_endpoint == Counter({"servers": 1})  # 401 is final for the poll
    for output in ("table", "json"):
        assert CANARY not in report([checked], output, Redactor())


def test_server_errors_are_retried_as_one_poll_retries_them() -> None:
    faults = FaultSet()
    faults.add_from_json({"kind": "server_error"})
    app = SimulatorApp(Fleet(lambda: T0, servers=3), faults, SIM_TOKEN)
    checked = _check(httpx.ASGITransport(app=app), _token())
    assert checked.failure == Failure("server_error", "HTTP 500")
    assert (checked.api_reachable, checked.auth_ok) == (True, None)
    assert app.stats.by_endpoint == Counter({"servers": RetryPolicy().max_attempts})


def test_a_rate_limited_account_says_how_long_the_api_asks_to_wait() -> None:
    faults = FaultSet()
    faults.add_from_json({"kind": "rate_limited", "params": {"retry_after": 90}})
    app = SimulatorApp(Fleet(lambda: T0, servers=3), faults, SIM_TOKEN)
    checked = _check(httpx.ASGITransport(app=app), _token())
    # One call and no retry: the check says what the API asked for, not that it will wait.
    assert checked.failure == Failure(
        "rate_limited", "HTTP 429: rate limited, the API asks to wait 90 s"
    )
    assert (checked.api_reachable, checked.auth_ok) == (True, None)  # a 429 says nothing of it
    assert app.stats.by_endpoint == Counter({"servers": 1})


def test_no_answer_is_an_unreachable_api() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    checked = _check(httpx.MockTransport(refuse), _token())
    assert checked.failure is not None
    assert checked.failure.reason == "connection"
    assert checked.failure.message.startswith("servers: ")
    assert (checked.api_reachable, checked.auth_ok) == (False, None)


def test_a_token_file_that_cannot_be_read_sends_nothing(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=[])

    missing = tmp_path / "token"
    checked = _check(httpx.MockTransport(record), TokenSource(Redactor(), path=missing))
    assert checked.failure is not None
    assert checked.failure.reason == "token_file"
    assert str(missing) in checked.failure.message
    assert (checked.api_reachable, checked.auth_ok, sent) == (None, None, [])


def test_a_listing_that_outlasts_the_deadline_is_a_timeout() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    checked = _check(httpx.MockTransport(hang), _token(), deadline=0.05)
    assert checked.failure == Failure("timeout", "poll exceeded its deadline of 0.05 s")
    assert (checked.api_reachable, checked.auth_ok) == (False, None)


# ------------------------------------------------------------------ the table and the JSON


def _fine(account: str = "prod") -> AccountCheck:
    uses = (QuotaUse("7", "db-long-hostname-1", "outgoing", 6 * TIB, 5 * TIB),
            QuotaUse("9", "web-1", "incoming", 1 * TIB, 4 * TIB))  # fmt: skip
    fleet = FleetSummary(servers=12, set_aside=1, by_status={"started": 9, "stopped": 3},
                         over_limit=2, over_quota=1, top_quota_used=uses)  # fmt: skip
    return AccountCheck(account, "https://evotic.io/api/v1", 0.0414, True, True, fleet)


def _failed(account: str = "staging") -> AccountCheck:
    failure = Failure("auth", "HTTP 401: token rejected (from the token file /run/secrets/x)")
    return AccountCheck(account, "https://evotic.io/api/v1", 0.2, True, False, failure=failure)


def _starts(header: str) -> list[int]:
    return [header.index(title) for title in COLUMNS]


def test_table_aligns_each_value_under_its_column() -> None:
    lines = render_table([_fine(), _failed()]).splitlines()
    header, *rows = lines
    starts = _starts(header)
    assert header.split("  ")[0] == "ACCOUNT"
    first = ["prod", "yes", "yes", "41 ms", "12", "started 9", "2", "1",
             "db-long-hostname-1  outgoing   120.0 %"]  # fmt: skip
    for start, value in zip(starts, first, strict=True):
        assert rows[0][start:].startswith(value), (value, rows[0])
    # Cells of several values continue on lines of their own, in their own columns.
    assert rows[1][starts[4] :].startswith("1 set aside")
    assert rows[1][starts[5] :].startswith("stopped 3")
    assert rows[1][starts[8] :] == "web-1               incoming    25.0 %"
    assert rows[1][: starts[4]].strip() == ""
    # The failed account's reason runs from SERVERS to the end, without widening a column.
    failed = rows[2]
    assert failed[: starts[4]].split() == ["staging", "yes", "no", "200", "ms"]
    assert failed[starts[4] :] == (
        "failed (auth): HTTP 401: token rejected (from the token file /run/secrets/x)"
    )
    assert len(rows) == 3
    alone = render_table([_fine()]).splitlines()[0]
    assert _starts(alone) == starts


def test_table_without_quota_data_shows_dashes() -> None:
    fleet = FleetSummary(servers=0, set_aside=0, by_status={}, over_limit=0, over_quota=None,
                         top_quota_used=())  # fmt: skip
    checked = AccountCheck("default", "http://x/api/v1", 0.001, True, True, fleet)
    header, row = render_table([checked]).splitlines()
    values = [row[start:].split("  ")[0] for start in _starts(header)]
    assert values == ["default", "yes", "yes", "1 ms", "0", "-", "0", "-", "-"]


def test_json_is_the_table_as_one_document() -> None:
    document = json.loads(report([_fine(), _failed()], "json", Redactor()))
    assert document["ok"] is False
    prod, staging = document["accounts"]
    assert prod == {
        "account": "prod", "api_url": "https://evotic.io/api/v1", "ok": True,
        "api_reachable": True, "auth_ok": True, "latency_ms": 41.4, "error": None,
        "servers": 12, "set_aside": 1, "by_status": {"started": 9, "stopped": 3},
        "over_limit": 2, "over_quota": 1,
        "top_quota_used": [
            {"server_id": "7", "hostname": "db-long-hostname-1", "direction": "outgoing",
             "used_bytes": 6 * TIB, "quota_bytes": 5 * TIB, "ratio": 1.2},
            {"server_id": "9", "hostname": "web-1", "direction": "incoming",
             "used_bytes": 1 * TIB, "quota_bytes": 4 * TIB, "ratio": 0.25},
        ],
    }  # fmt: skip
    assert staging["ok"] is False
    assert staging["error"] == {"reason": "auth", "message": _failed().failure.message}  # type: ignore[union-attr]
    for key in ("servers", "set_aside", "by_status", "over_limit", "over_quota",
                "top_quota_used"):  # fmt: skip
        assert staging[key] is None
    assert to_json([_fine()])["ok"] is True


def test_whatever_it_prints_has_every_token_blanked_out() -> None:
    redactor = Redactor()
    redactor.add(CANARY)
    leaky = AccountCheck("prod", "http://x/api/v1", 0.1, True, False,
                         failure=Failure("auth", f"a message holding {CANARY}"))  # fmt: skip
    for output in ("table", "json"):
        text = report([leaky], output, redactor)
        assert CANARY not in text
        assert REDACTED in text


# ------------------------------------------------------------------ the command, in process


def test_check_of_the_demo_prints_its_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--demo", "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    (account,) = document["accounts"]
    demo = Fleet(time.time, servers=SimulatorOptions().servers, seed=SimulatorOptions().seed)
    assert account["account"] == "default"
    assert account["by_status"] == Counter(server["status"] for server in demo.state()["servers"])
    # The demo's quota, as the exporter's demo sets it, gives the quota columns something.
    assert {use["quota_bytes"] for use in account["top_quota_used"]} == {DEMO_QUOTA_BYTES}
    assert len(account["top_quota_used"]) == 5

    assert main(["check", "--demo"]) == 0
    header, row, *_ = capsys.readouterr().out.splitlines()
    assert header.split() == " ".join(COLUMNS).split()
    assert row.split()[:3] == ["default", "yes", "yes"]


def test_check_of_the_demo_with_a_configuration_file_checks_each_account(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "accounts.yml"
    config.write_text("accounts:\n  prod: {}\n  staging: {}\n")
    assert main(["check", "--demo", "--config.file", str(config), "--output", "json"]) == 0
    accounts = json.loads(capsys.readouterr().out)["accounts"]
    assert [a["account"] for a in accounts] == ["prod", "staging"]
    # Each account polls a fleet of its own, as under the exporter.
    assert accounts[0]["api_url"] != accounts[1]["api_url"]


def test_check_against_simulators_on_sockets(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{CANARY}\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n")

    async def scenario() -> list[AccountCheck]:
        async with await start_simulator(SimulatorOptions(servers=6, token=CANARY)) as sim:
            single = load(["--api.url", sim.url, "--api.token-file", str(token_file)])
            config = tmp_path / "accounts.yml"
            config.write_text(f"accounts:\n  good:\n    token_file: {token_file}\n"
                              f"    api_url: {sim.url}\n  bad:\n    token_file: {wrong}\n"
                              f"    api_url: {sim.url}\n")  # fmt: skip
            several = load(["--config.file", str(config)])
            inline = load(["--api.url", sim.url, "--api.token", CANARY])
            redactor = Redactor()
            checks = [*await check_all(single, redactor), *await check_all(several, redactor),
                      *await check_all(inline, redactor)]  # fmt: skip
            for output in ("table", "json"):
                assert CANARY not in report(checks, output, redactor)
            return checks

    default, good, bad, inline = asyncio.run(scenario())
    assert default.ok
    assert good.ok
    assert inline.ok
    assert default.fleet == good.fleet
    assert bad.failure == Failure("auth", f"HTTP 401: token rejected (from the token file {wrong})")


@pytest.mark.parametrize(
    "argv",
    [
        ["--poll.interval", "0"],
        ["--api.url", "ftp://x", "--api.token", CANARY],
        ["--demo", "--api.token", CANARY],
        ["--config.file", "/nonexistent/accounts.yml"],
        ["--api.token", CANARY, "--web.config.file", "/nonexistent/web.yml"],
    ],
)
def test_invalid_settings_exit_2_with_the_exporters_own_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    daemon = capsys.readouterr()
    assert main(["check", *argv]) == 2
    checked = capsys.readouterr()
    assert checked.out == ""
    assert checked.err == daemon.err
    assert len(checked.err.splitlines()) == 1
    assert CANARY not in checked.err


def test_check_takes_its_own_flags_and_the_exporters(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith(f"usage: {PROG} check [-h] [--output {{table,json}}]")
    assert f"Every setting of the exporter is accepted too ({PROG} --help lists them)" in text

    with pytest.raises(SystemExit) as exited:
        main(["check", "--output", "xml"])
    assert exited.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:
        main(["check", "--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"{PROG} ")

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for command in ("check [--output json]", "dashboards --output DIR", "rules --output DIR"):
        assert command in help_text


@pytest.mark.parametrize("argv", [["checks"], ["--demo", "check"], ["rule"]])
def test_a_command_is_only_ever_the_first_word_exactly(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Anything else is the exporter's command line, parsed as it always was.
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: unrecognized arguments: {argv[-1]}")


def test_the_readme_shows_the_table_as_the_demo_prints_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- check-demo -->\n```\n(.*?)```\n", readme, re.S)
    assert found, "README.md lacks the check table (<!-- check-demo -->)"
    shown = found[1].splitlines()
    assert main(["check", "--demo"]) == 0
    printed = capsys.readouterr().out.splitlines()
    # The figures of traffic move with the clock; the layout and the statuses do not.
    assert shown[0] == printed[0]
    assert len(shown) == len(printed)
    starts = _starts(printed[0])
    for column in ("ACCOUNT", "API", "AUTH", "SERVERS", "BY STATUS"):
        start = starts[COLUMNS.index(column)]
        end = starts[COLUMNS.index(column) + 1]
        assert [line[start:end] for line in shown] == [line[start:end] for line in printed]


# ------------------------------------------------------------------ the command, as a process


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVOTIC_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


@pytest.fixture
def canary_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(f"{CANARY}\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def paginated(tmp_path: Path) -> Iterator[str]:
    """A simulator process that takes the canary, 30 servers in pages of 7: its API URL."""
    with simulator(tmp_path, "--servers", "30", "--paginate", "--per-page", "7",
                   token=CANARY) as sim:  # fmt: skip
        yield sim.url


@pytest.mark.e2e
def test_process_check_of_a_good_account_matches_the_simulators_fleet(
    paginated: str, canary_file: Path
) -> None:
    api = f"{paginated}/api/v1"
    httpx.post(f"{paginated}/_simulator/stats/reset")
    result = _run("check", "--api.url", api, "--api.token-file", str(canary_file),
                  "--traffic.quota-bytes", "5TiB", "--output", "json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    state = httpx.get(f"{paginated}/_simulator/state").json()
    (account,) = json.loads(result.stdout)["accounts"]
    by_status, over, top = _state_summary(state, 5 * TIB)
    assert account["by_status"] == by_status
    assert account["servers"] == len(state["servers"]) == 30
    assert account["over_limit"] == over
    assert [use["hostname"] for use in account["top_quota_used"]] == top
    assert (account["api_reachable"], account["auth_ok"], account["error"]) == (True, True, None)
    # One listing call, all five pages of it; no status call.
    assert state["stats"]["servers"] == 5
    assert state["stats"]["status"] == 0

    table = _run("check", "--api.url", api, "--api.token-file", str(canary_file))
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    starts = _starts(header)
    assert rows[0][: starts[4]].split()[:3] == ["default", "yes", "yes"]
    statuses = [row[starts[5] : starts[6]].strip() for row in rows]
    assert statuses[: len(by_status)] == [f"{s} {n}" for s, n in sorted(
        by_status.items(), key=lambda item: (-item[1], item[0]))]  # fmt: skip
    for output in (result.stdout, result.stderr, table.stdout, table.stderr):
        assert CANARY not in output


@pytest.mark.e2e
def test_process_check_with_a_rejected_token_exits_1_with_the_reason(tmp_path: Path) -> None:
    with simulator(tmp_path, "--servers", "3", token=SIM_TOKEN) as sim:
        api = f"{sim.url}/api/v1"
        flag = _run("check", "--api.url", api, env={"EVOTIC_API_TOKEN": CANARY})
        as_json = _run("check", "--api.url", api, "--output", "json",
                       env={"EVOTIC_API_TOKEN": CANARY})  # fmt: skip
    assert flag.returncode == 1
    header, row = flag.stdout.splitlines()
    assert row[_starts(header)[4] :] == (
        "failed (auth): HTTP 401: token rejected (from EVOTIC_API_TOKEN (--api.token))"
    )
    assert row.split()[:3] == ["default", "yes", "no"]
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["accounts"][0]["error"]["reason"] == "auth"
    for output in (flag.stdout, flag.stderr, as_json.stdout, as_json.stderr):
        assert CANARY not in output


@pytest.mark.e2e
def test_process_check_of_two_accounts_one_failing_prints_both(
    paginated: str, canary_file: Path, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/api/v1"
    config = tmp_path / "accounts.yml"
    config.write_text(f"accounts:\n  prod:\n    token_file: {canary_file}\n"
                      f"    api_url: {paginated}/api/v1\n"
                      f"  staging:\n    token_file: {canary_file}\n"
                      f"    api_url: {closed}\n")  # fmt: skip
    result = _run("check", "--config.file", str(config))
    assert result.returncode == 1, result.stderr
    header, *rows = result.stdout.splitlines()
    starts = _starts(header)
    names = [row[: starts[1]].strip() for row in rows if row[: starts[1]].strip()]
    assert names == ["prod", "staging"]
    (staging,) = [row for row in rows if row.startswith("staging")]
    assert staging.split()[:3] == ["staging", "no", "-"]
    assert staging[starts[4] :] == "failed (connection): servers: connection refused"
    (prod,) = [row for row in rows if row.startswith("prod")]
    assert prod[starts[4] :].split()[0] == "30"
    assert CANARY not in result.stdout + result.stderr


@pytest.mark.e2e
def test_process_check_exits_2_for_an_invalid_configuration_as_the_exporter_does(
    tmp_path: Path,
) -> None:
    config = tmp_path / "accounts.yml"
    config.write_text("accounts:\n  prod:\n    token: inline\n")
    checked = _run("check", "--config.file", str(config))
    daemon = _run("--config.file", str(config))
    assert checked.returncode == daemon.returncode == 2
    assert checked.stdout == ""
    assert checked.stderr == daemon.stderr
    assert checked.stderr.startswith(f"{PROG}: invalid setting EVOTIC_CONFIG_FILE")
    assert "accounts.prod.token" in checked.stderr


@pytest.mark.e2e
def test_process_version_prints_the_version_and_exits_0() -> None:
    script = Path(sys.executable).parent / PROG
    for argv in ([str(script), "--version"], [str(script), "check", "--version"],
                 [sys.executable, "-m", "exporter", "--version"]):  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [PROG, __version__]
