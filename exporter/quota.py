"""Traffic quotas and billing periods: what lets rules warn days before a limit is hit.

The API only says that a limit *is* exceeded. Operators know their plans' included traffic, so
they can tell the exporter: one default (``EVOTIC_TRAFFIC_QUOTA_BYTES``) and per-server
overrides in a YAML file (``EVOTIC_TRAFFIC_QUOTA_FILE``). The API reports and flags each
direction on its own, so a quota is per direction: a plain size applies to each direction
separately, and ``{incoming: ..., outgoing: ...}`` sets them apart (a direction left out has no
quota).

    default: 20TiB
    servers:
      - hostname: "db-*"          # shell-style pattern on the hostname
        quota: {outgoing: 5TiB}
      - id: "42"
        quota: 1099511627776
"""

from __future__ import annotations

import calendar
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from exporter.api.models import Server

DIRECTIONS = ("incoming", "outgoing")
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

Quota = Mapping[str, float]  # direction -> bytes


class QuotaError(ValueError):
    """A quota file or value that cannot be used; the message names the place."""


def parse_size(value: object, where: str) -> float:
    """Bytes from ``1099511627776``, ``"20TiB"`` or ``"1.5 TB"`` (TB = 10^12, TiB = 2^40)."""
    if isinstance(value, bool):
        raise QuotaError(f"{where}: expected a size, got {value!r}")
    if isinstance(value, (int, float)):
        size = float(value)
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2).lower()
        if unit not in _UNITS:
            raise QuotaError(f"{where}: unknown unit {match.group(2)!r} (use B, GB, GiB, TB, TiB…)")
        size = float(match.group(1)) * _UNITS[unit]
    else:
        raise QuotaError(f"{where}: expected a size such as 20TiB, got {value!r}")
    if not 0 < size < 2**63:
        raise QuotaError(f"{where}: size must be positive")
    return size


def _quota(value: object, where: str) -> Quota:
    if isinstance(value, dict):
        unknown = set(value) - set(DIRECTIONS)
        if unknown:
            raise QuotaError(f"{where}: unknown direction {sorted(unknown)[0]!r}")
        return {d: parse_size(value[d], f"{where}.{d}") for d in DIRECTIONS if d in value}
    size = parse_size(value, where)
    return dict.fromkeys(DIRECTIONS, size)


@dataclass(frozen=True)
class Rule:
    """One override: servers whose hostname matches ``hostname`` (a glob) or whose id is ``id``."""

    quota: Quota
    hostname: str | None = None
    server_id: str | None = None

    def matches(self, server: Server) -> bool:
        if self.server_id is not None and server.id != self.server_id:
            return False
        return self.hostname is None or fnmatch.fnmatchcase(server.hostname, self.hostname)


@dataclass(frozen=True)
class Quotas:
    """The default quota and the overrides; the first matching override wins."""

    default: Quota
    rules: tuple[Rule, ...] = ()

    def for_server(self, server: Server) -> Quota:
        for rule in self.rules:
            if rule.matches(server):
                return rule.quota
        return self.default


def load_quotas(default_bytes: float | None, path: Path | None) -> Quotas:
    default: Quota = dict.fromkeys(DIRECTIONS, default_bytes) if default_bytes else {}
    if path is None:
        return Quotas(default)
    try:
        document: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise QuotaError(f"cannot read {path}: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = str(error).splitlines()[0]
        raise QuotaError(f"{path} is not valid YAML: {problem}") from None
    document = document or {}
    if not isinstance(document, dict) or set(document) - {"default", "servers"}:
        raise QuotaError(f"{path}: expected the keys 'default' and 'servers'")
    if "default" in document:
        default = _quota(document["default"], f"{path}: default")
    rules = []
    entries = document.get("servers") or []
    if not isinstance(entries, list):
        raise QuotaError(f"{path}: 'servers' must be a list")
    for n, entry in enumerate(entries):
        where = f"{path}: servers[{n}]"
        if not isinstance(entry, dict) or "quota" not in entry:
            raise QuotaError(f"{where}: expected a mapping with 'quota'")
        if set(entry) - {"hostname", "id", "quota"} or not ({"hostname", "id"} & set(entry)):
            raise QuotaError(f"{where}: match on 'hostname' (a pattern) or 'id'")
        hostname, server_id = entry.get("hostname"), entry.get("id")
        rules.append(
            Rule(
                quota=_quota(entry["quota"], f"{where}.quota"),
                hostname=None if hostname is None else str(hostname),
                server_id=None if server_id is None else str(server_id),
            )
        )
    return Quotas(default, tuple(rules))


def billing_period(now: float, start_day: int) -> tuple[float, float]:
    """Start and end (Unix seconds, UTC) of the billing period around ``now``.

    A period starts at 00:00 UTC on ``start_day`` of a month; in months shorter than that
    day it starts on the month's last day.
    """
    moment = datetime.fromtimestamp(now, UTC)

    def start_of(year: int, month: int) -> datetime:
        day = min(start_day, calendar.monthrange(year, month)[1])
        return datetime(year, month, day, tzinfo=UTC)

    def shift(year: int, month: int, by: int) -> tuple[int, int]:
        index = year * 12 + (month - 1) + by
        return index // 12, index % 12 + 1

    start = start_of(moment.year, moment.month)
    if moment < start:
        start = start_of(*shift(moment.year, moment.month, -1))
    end = start_of(*shift(start.year, start.month, 1))
    return start.timestamp(), end.timestamp()
