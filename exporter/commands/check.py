"""``evotic-exporter check``: ask each account's API once, before trusting the exporter with it.

It reads the settings, flags, variables and files exactly as the exporter does (``load``), so a
mistake ends it with the same one line and exit code 2. Then, for every account at once, it
makes one listing call (every page of ``GET /servers``, with the client's own retries and the
poll's deadline, as one poll makes it; no status calls) and reports what the answer says, as
an aligned table (README.md shows one) or one JSON document.

Exit code 0 when every account's listing came, 1 when any failed (the row says why, in the
words the poller logs), 2 for invalid settings or files. Every token the check sends is
registered with a ``Redactor``, and everything it prints goes through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from exporter.api.client import EvoticClient
from exporter.api.errors import EvoticError
from exporter.api.models import Server
from exporter.api.network import ProxySettingError
from exporter.api.token import TokenSource
from exporter.exposition.families import FLOWS, traffic_of
from exporter.polling.poller import PollSettings
from exporter.runtime.logs import Redactor
from exporter.service.connect import connect, with_demo_quota
from exporter.settings.accounts import AccountConfig
from exporter.settings.loading import PROG, Loaded, Parser, load
from exporter.settings.model import SettingsError
from exporter.settings.quotas import Quotas
from exporter.web.config import load_web

OUTPUTS = ("table", "json")
TOP = 5
COLUMNS = ("ACCOUNT", "API", "AUTH", "LATENCY", "SERVERS", "BY STATUS", "OVER LIMIT",
           "OVER QUOTA", "TOP QUOTA USED")  # fmt: skip
# The columns a failed account's reason runs across, from the first of them to the end.
_FIRST_FLEET_COLUMN = COLUMNS.index("SERVERS")


@dataclass(frozen=True)
class QuotaUse:
    """A server's traffic this billing period against its quota, in its fullest direction."""

    server_id: str
    hostname: str
    direction: str
    used_bytes: float
    quota_bytes: float

    @property
    def ratio(self) -> float:
        return self.used_bytes / self.quota_bytes


@dataclass(frozen=True)
class FleetSummary:
    """What one listing says about the fleet.

    ``over_limit``: servers the API flags ``is_exceeded`` in either direction (the plan's
    limit). ``over_quota``: servers that used their configured quota or more in either
    direction; ``None`` when no listed server has a quota. ``top_quota_used``: the servers with
    a quota and traffic data, by the larger of their two ratios, fullest first.
    """

    servers: int
    set_aside: int
    by_status: Mapping[str, int]
    over_limit: int
    over_quota: int | None
    top_quota_used: tuple[QuotaUse, ...]


@dataclass(frozen=True)
class Failure:
    """Why an account's listing did not come: ``reason`` as in ``evotic_poll_errors_total``,
    ``message`` as the poller logs it."""

    reason: str
    message: str


@dataclass(frozen=True)
class AccountCheck:
    """One account's answer, or why there was none.

    ``api_reachable``: an HTTP answer came (``None``: no request was sent). ``auth_ok``: the
    API answered 200 (``False`` on 401 or 403; ``None`` when no answer said either way).
    """

    account: str
    api_url: str
    latency_seconds: float
    api_reachable: bool | None
    auth_ok: bool | None
    fleet: FleetSummary | None = None
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def summarize(servers: Sequence[Server], quotas: Quotas, set_aside: int = 0) -> FleetSummary:
    """Counts by status, servers over their limit or quota, and the top five by quota used."""
    by_status = Counter(server.status or "unknown" for server in servers)
    over_limit = 0
    uses = []
    has_quota = False
    for server in servers:
        quota = quotas.for_server(server)
        has_quota = has_quota or bool(quota)
        traffic = traffic_of(server)
        exceeded = False
        fullest: QuotaUse | None = None
        for direction, flow_of in FLOWS:
            flow = None if traffic is None else flow_of(traffic)
            if flow is None:
                continue
            exceeded = exceeded or bool(flow.is_exceeded)
            size = quota.get(direction)
            if size is not None and flow.value is not None:
                use = QuotaUse(server.id, server.hostname, direction, flow.value, size)
                if fullest is None or use.ratio > fullest.ratio:
                    fullest = use
        over_limit += exceeded
        if fullest is not None:
            uses.append(fullest)
    uses.sort(key=lambda use: (-use.ratio, use.hostname, use.server_id))
    return FleetSummary(
        servers=len(servers),
        set_aside=set_aside,
        by_status=dict(sorted(by_status.items(), key=lambda item: (-item[1], item[0]))),
        over_limit=over_limit,
        over_quota=sum(use.ratio >= 1 for use in uses) if has_quota else None,
        top_quota_used=tuple(uses[:TOP]),
    )


class RequestCodes:
    """The client's request observer: the code of every request the check made."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def __call__(self, endpoint: str, code: str, seconds: float) -> None:
        self.codes.append(code)

    @property
    def reachable(self) -> bool | None:
        if not self.codes:
            return None
        # The client counts a request without an answer as "timeout" or "connection".
        return any(code.isdigit() for code in self.codes)

    @property
    def auth_ok(self) -> bool | None:
        if any(code in ("401", "403") for code in self.codes):
            return False
        return True if "200" in self.codes else None


async def check_listing(
    account: str,
    client: EvoticClient,
    token: TokenSource,
    quotas: Quotas,
    codes: RequestCodes,
    *,
    deadline: float,
    clock: Callable[[], float] = time.perf_counter,
) -> AccountCheck:
    """One listing call, bounded and reported as one poll is; ``codes`` observes ``client``."""
    started = clock()
    failure = None
    try:
        async with asyncio.timeout(deadline):
            token.refresh()
            with client.deadline(deadline):
                listing = await client.list_servers()
    except TimeoutError:
        failure = Failure("timeout", f"poll exceeded its deadline of {deadline} s")
    except EvoticError as error:
        failure = Failure(error.reason, str(error))
    latency = clock() - started
    fleet = None
    if failure is None:
        fleet = summarize(listing.servers, quotas, len(listing.rejected))
    return AccountCheck(account, client.base_url, latency, codes.reachable, codes.auth_ok,
                        fleet, failure)  # fmt: skip


async def check_account(config: AccountConfig, redactor: Redactor, *, multi: bool) -> AccountCheck:
    """Build the account's token source and client as the exporter does, and check it; with
    ``--demo``, against a simulator of its own, started as the exporter starts it."""
    async with contextlib.AsyncExitStack() as stack:
        codes = RequestCodes()
        connection = await connect(config, stack, redactor, multi=multi, observe=codes,
                                   one_call=True)  # fmt: skip
        deadline = PollSettings.from_settings(config.settings).deadline
        checked = await check_listing(config.name, connection.client, connection.token,
                                      config.quotas, codes, deadline=deadline)  # fmt: skip
    return checked


async def check_all(loaded: Loaded, redactor: Redactor) -> list[AccountCheck]:
    """Every account at once, in the configured order."""
    accounts = dict(loaded.accounts)
    if loaded.settings.demo:
        accounts = with_demo_quota(accounts)
    multi = loaded.settings.config_file is not None
    return list(
        await asyncio.gather(
            *(check_account(config, redactor, multi=multi) for config in accounts.values())
        )
    )


# ------------------------------------------------------------------------------- output


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def _quota_lines(uses: Sequence[QuotaUse], width: int) -> list[str]:
    return [
        f"{use.hostname:<{width}}  {use.direction:<8}  {100 * use.ratio:6.1f} %" for use in uses
    ]


def _cells(check: AccountCheck, hostname_width: int) -> list[list[str]]:
    cells = [[check.account], [_yes_no(check.api_reachable)], [_yes_no(check.auth_ok)],
             [f"{1000 * check.latency_seconds:.0f} ms"]]  # fmt: skip
    fleet = check.fleet
    if fleet is None:
        return [*cells, *([""] for _ in COLUMNS[_FIRST_FLEET_COLUMN:])]
    servers = [str(fleet.servers)] + ([f"{fleet.set_aside} set aside"] if fleet.set_aside else [])
    return [
        *cells,
        servers,
        [f"{status} {count}" for status, count in fleet.by_status.items()] or ["-"],
        [str(fleet.over_limit)],
        ["-" if fleet.over_quota is None else str(fleet.over_quota)],
        _quota_lines(fleet.top_quota_used, hostname_width) if fleet.top_quota_used else ["-"],
    ]


def render_table(checks: Sequence[AccountCheck]) -> str:
    """The aligned table: one row per account, a cell of several values on lines of its own.

    A failed account's reason runs from the SERVERS column to the end of its line and does not
    widen the columns.
    """
    hostnames = [use.hostname for check in checks if check.fleet
                 for use in check.fleet.top_quota_used]  # fmt: skip
    width = max(map(len, hostnames), default=0)
    rows = [[[title] for title in COLUMNS]] + [_cells(check, width) for check in checks]
    widths = [max(len(line) for row in rows for line in row[column])
              for column in range(len(COLUMNS))]  # fmt: skip
    lines = []
    for index, row in enumerate(rows):
        failure = checks[index - 1].failure if index else None
        for number in range(max(len(cell) for cell in row)):
            parts = [(cell[number] if number < len(cell) else "").ljust(width)
                     for cell, width in zip(row, widths, strict=True)]  # fmt: skip
            if failure is not None and number == 0:
                parts[_FIRST_FLEET_COLUMN:] = [f"failed ({failure.reason}): {failure.message}"]
            lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def to_json(checks: Sequence[AccountCheck]) -> dict[str, Any]:
    """The same as the table, as one document; a failed account has nulls for its fleet."""
    accounts = []
    for check in checks:
        fleet = check.fleet
        failure = check.failure
        accounts.append({
            "account": check.account,
            "api_url": check.api_url,
            "ok": check.ok,
            "api_reachable": check.api_reachable,
            "auth_ok": check.auth_ok,
            "latency_ms": round(1000 * check.latency_seconds, 1),
            "error": None if failure is None else {"reason": failure.reason,
                                                   "message": failure.message},
            "servers": None if fleet is None else fleet.servers,
            "set_aside": None if fleet is None else fleet.set_aside,
            "by_status": None if fleet is None else dict(fleet.by_status),
            "over_limit": None if fleet is None else fleet.over_limit,
            "over_quota": None if fleet is None else fleet.over_quota,
            "top_quota_used": None if fleet is None else [
                {"server_id": use.server_id, "hostname": use.hostname,
                 "direction": use.direction, "used_bytes": use.used_bytes,
                 "quota_bytes": use.quota_bytes, "ratio": round(use.ratio, 4)}
                for use in fleet.top_quota_used
            ],
        })  # fmt: skip
    return {"ok": all(check.ok for check in checks), "accounts": accounts}


# ------------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} check",
        description="Make one listing call per account and report what it says.",
        epilog=f"Every setting of the exporter is accepted too ({PROG} --help lists them). "
        "Exit code 0 when every account answered, 1 when any failed, 2 for invalid settings.",
        allow_abbrev=False,
    )
    parser.add_argument("--output", choices=OUTPUTS, default="table",
                        help="table (default) or json")  # fmt: skip
    return parser


def main(argv: Sequence[str], stdout: TextIO | None = None) -> int:
    """``evotic-exporter check [--output json] [settings]``; returns the exit code."""
    own, rest = build_parser().parse_known_args(argv)
    try:
        loaded = load(rest)
        load_web(loaded.settings)  # the daemon would refuse a bad one: so does the check
    except (SettingsError, ProxySettingError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    redactor = Redactor()
    checks = asyncio.run(check_all(loaded, redactor))
    (stdout or sys.stdout).write(report(checks, own.output, redactor))
    return 0 if all(check.ok for check in checks) else 1


def report(checks: Sequence[AccountCheck], output: str, redactor: Redactor) -> str:
    """The table or the JSON document, every token the check sent blanked out."""
    if output == "json":
        text = json.dumps(to_json(checks), indent=2, ensure_ascii=False) + "\n"
    else:
        text = render_table(checks)
    # The messages come from the client and name no token; this makes sure of it.
    return redactor.scrub(text)
