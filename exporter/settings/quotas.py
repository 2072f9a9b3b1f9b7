"""Traffic quotas and billing periods: what lets rules warn days before a limit is hit.

The API only says that a limit *is* exceeded. Operators know their plans' included traffic, so
they can tell the exporter: one default (``EVOTIC_TRAFFIC_QUOTA_BYTES``) and per-server
overrides in a YAML file (``EVOTIC_TRAFFIC_QUOTA_FILE``). The API reports and flags each
direction on its own, so a quota is per direction: a plain size applies to each direction
separately, and ``{incoming: ..., outgoing: ...}`` sets them apart.

    default: 20TiB
    servers:
      - hostname: "db-*"          # shell-style pattern on the hostname, in any case
        quota: {outgoing: 5TiB}   # incoming keeps the default's 20TiB
      - id: "42"
        quota: {incoming: null, outgoing: 1099511627776}  # null: no incoming quota

Each direction falls back on its own: the first matching rule, else the file's ``default``,
else ``EVOTIC_TRAFFIC_QUOTA_BYTES``, else no quota; ``null`` says "no quota" and stops there.
The README says the same under "Traffic quotas and billing periods".
"""

from __future__ import annotations

import calendar
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, ClassVar, Self

from pydantic import AfterValidator, BeforeValidator, Field, StrictStr, model_validator

from exporter.api.models import Server
from exporter.settings.schema import FileError, Schema, load_file

DIRECTIONS = ("incoming", "outgoing")
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

Quota = Mapping[str, float]  # direction -> bytes


class QuotaError(FileError):
    """A quota file or value that cannot be used: ``path``, ``key`` and ``problem`` say why."""


def size_bytes(value: object) -> float:
    """Bytes from ``1099511627776``, ``"20TiB"`` or ``"1.5 TB"`` (TB = 10^12, TiB = 2^40).

    ``ValueError`` says what is wrong. pydantic's ``ByteSize`` is not used: it takes zero and
    exabytes, and the words of its errors are not the ones this setting has always printed.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}")
    if isinstance(value, (int, float)):
        size = float(value)
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2).lower()
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {match.group(2)!r} (use B, GB, GiB, TB, TiB…)")
        size = float(match.group(1)) * _UNITS[unit]
    else:
        raise ValueError(f"expected a size such as 20TiB, got {value!r}")
    if not 0 < size < 2**63:
        raise ValueError("size must be positive")
    return size


# A size in bytes as a pydantic type, for the settings and the quota file alike.
Size = Annotated[float, BeforeValidator(size_bytes)]


def parse_size(value: object, key: str = "size") -> float:
    """``size_bytes``, with a mistake raised as a ``QuotaError`` naming ``key``."""
    try:
        return size_bytes(value)
    except ValueError as error:
        raise QuotaError(None, key, str(error)) from None


class DirectionQuotas(Schema):
    """``{incoming: 5TiB, outgoing: null}``: the directions named, ``null`` for no quota; a
    direction left out keeps the quota of the level below (see ``over``)."""

    unknown_key: ClassVar[str] = "unknown direction (use {known})"

    incoming: Size | None = None
    outgoing: Size | None = None

    def over(self, below: Quota) -> Quota:
        """``below`` with the directions named here put in its place (``null``: no quota)."""
        merged = {**below, **{d: getattr(self, d) for d in self.model_fields_set}}
        return {d: size for d in DIRECTIONS if (size := merged.get(d)) is not None}


_NO_DIRECTION = "names no direction: give a size, or incoming and outgoing (null: no quota)"


def _same_for_both(value: object) -> object:
    # A plain size is checked here, so that its mistake names the quota, not a direction.
    if isinstance(value, dict):
        if not value:
            # It would set nothing, though it reads as "no quota" (which is null per direction).
            raise ValueError(_NO_DIRECTION)
        return value
    return dict.fromkeys(DIRECTIONS, size_bytes(value))


# A quota as the file writes it: one size for each direction, or a mapping of directions.
QuotaValue = Annotated[DirectionQuotas, BeforeValidator(_same_for_both)]
_MATCH = "match on 'hostname' (a pattern) or 'id'"
_ONE_WAY = "give either 'hostname' or 'id', not both (a rule for each matches either)"


def _number_as_id(value: object) -> object:
    # The API sends an id as a number or a string, so id: 42 is the id "42"; 4.2 is a mistake.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _not_empty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty (it would match no server)")
    return value


# Strict strings: YAML reads an unquoted 42 or [a, b] as another type, whose text
# ("[a, b]") would be matched against hostnames and match nothing.
_Pattern = Annotated[StrictStr, AfterValidator(_not_empty)]
_ServerId = Annotated[StrictStr, BeforeValidator(_number_as_id), AfterValidator(_not_empty)]


class QuotaOverride(Schema):
    """One entry of ``servers``: which servers (a hostname pattern or an id) and their quota."""

    hostname: _Pattern | None = None
    server_id: _ServerId | None = Field(default=None, alias="id")
    quota: QuotaValue

    @model_validator(mode="after")
    def _matches_one_way(self) -> Self:
        if self.hostname is None and self.server_id is None:
            raise ValueError(_MATCH)
        if self.hostname is not None and self.server_id is not None:
            # "and" would match one server at most, "or" many: refused rather than guessed.
            raise ValueError(_ONE_WAY)
        return self


class QuotaFile(Schema):
    """The quota file: ``default`` over the setting's quota, ``servers`` over that."""

    unknown_key: ClassVar[str] = "unknown key (expected the keys 'default' and 'servers')"

    default: QuotaValue = DirectionQuotas()
    servers: list[QuotaOverride] | None = None


@dataclass(frozen=True)
class Rule:
    """One override: the servers whose hostname matches ``hostname`` (a glob, in any case), or
    the server whose id is ``server_id`` (exactly); a rule has one of the two. ``quota`` is
    their whole quota, the default's directions already filled in."""

    quota: Quota
    hostname: str | None = None
    server_id: str | None = None

    def matches(self, server: Server) -> bool:
        if self.hostname is not None:
            # Host names are case-insensitive (RFC 4343): DB-1 and db-1 are the same host.
            return fnmatch.fnmatchcase(server.hostname.lower(), self.hostname.lower())
        # An id is the API's opaque key: compared as it is written.
        return server.id == self.server_id


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
    """The quotas: ``default_bytes`` for every direction, under the file at ``path`` (each
    direction falls back on its own); ``QuotaError`` if the file cannot be used."""
    default: Quota = dict.fromkeys(DIRECTIONS, default_bytes) if default_bytes else {}
    if path is None:
        return Quotas(default)
    document = load_file(path, QuotaFile, QuotaError)
    default = document.default.over(default)
    rules = tuple(
        Rule(quota=entry.quota.over(default), hostname=entry.hostname, server_id=entry.server_id)
        for entry in document.servers or ()
    )
    return Quotas(default, rules)


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
