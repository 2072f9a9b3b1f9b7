"""Typed records of the Evotic API's answers.

They accept what a real API sends (unknown fields, nulls while a server installs, ids as numbers
or strings) and refuse what no real server can have (negative or non-finite amounts, addresses
that are not IP addresses), so a broken record is caught here rather than exported as a wrong
number.

The records are frozen pydantic dataclasses with ``__slots__`` rather than ``BaseModel``s: a
model instance carries a ``__dict__`` and a set of the fields it was given, which at 10,000
servers of eight nested records each made validation three times slower (mostly in the cyclic
garbage collector, walking a quarter of a million containers) and the snapshot four times
larger. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass

# An upper bound far above any real server (2^53 keeps every value exact in a float sample).
_MAX_AMOUNT = float(2**53)

_CONFIG = ConfigDict(extra="ignore", str_max_length=1024)

Amount = Annotated[float, Field(ge=0, le=_MAX_AMOUNT, allow_inf_nan=False)]


def _id_to_str(value: Any) -> Any:
    # The documentation types the id as a string but shows a number; bool is an int subclass.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _ip_address(value: str) -> str:
    # inet_pton is the C parser behind the socket module: the same answer as the ipaddress
    # module for every address an API lists (dotted quads without leading zeros, RFC 4291
    # text), at a twentieth of the cost, which matters at 20,000 addresses per poll.
    # Only IPv6 zone ids ("fe80::1%eth0") are refused, which no public address has.
    family = socket.AF_INET6 if ":" in value else socket.AF_INET
    try:
        socket.inet_pton(family, value)
    except (OSError, ValueError):
        raise ValueError("not an IPv4 or IPv6 address") from None
    return value


ServerId = Annotated[str, BeforeValidator(_id_to_str), Field(min_length=1, max_length=64)]
IpText = Annotated[str, AfterValidator(_ip_address)]


@dataclass(frozen=True, slots=True, config=_CONFIG)
class Specifications:
    """Booked resources: cores, memory in MB and disk in GB (read as MiB and GiB)."""

    cpu: Amount | None = None
    ram: Amount | None = None
    disk: Amount | None = None


@dataclass(frozen=True, slots=True, config=_CONFIG)
class IpAddress:
    """One address of a server; ``family`` is derived, so a malformed address is refused."""

    ip: IpText
    is_primary: bool = False

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.ip else "ipv4"


@dataclass(frozen=True, slots=True, config=_CONFIG)
class TrafficDirection:
    """One direction of traffic: bytes this billing period, last period, and the limit flag."""

    value: Amount | None = None
    prev: Amount | None = None
    is_exceeded: bool | None = None


@dataclass(frozen=True, slots=True, config=_CONFIG)
class Traffic:
    """Traffic of the current and the previous billing period, per direction."""

    incoming: TrafficDirection | None = None
    outgoing: TrafficDirection | None = None


@dataclass(frozen=True, slots=True, config=_CONFIG)
class Usage:
    """Current usage: CPU in percent, memory in MB, disk in GB, traffic in bytes."""

    cpu: Amount | None = None
    ram: Amount | None = None
    disk: Amount | None = None
    traffic: Traffic | None = None


@dataclass(frozen=True, slots=True, config=_CONFIG)
class Server:
    """A server as listed by ``GET /servers``."""

    id: ServerId
    hostname: str
    uuid: str | None = None
    status: str | None = None
    node: str | None = None
    os: str | None = None
    specifications: Specifications | None = None
    ip_addresses: list[IpAddress] | None = None
    usage: Usage | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True, config=_CONFIG)
class ServerStatus:
    """The answer of ``GET /servers/{id}/status``: a running task and its progress."""

    status: str | None = None
    real_status: str | None = None
    is_processing: bool = False
    progress: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None


@dataclass(frozen=True, slots=True, config=_CONFIG)
class Links:
    """The paginator's links; only ``next`` is followed."""

    next: str | None = None


@dataclass(frozen=True, slots=True, config=_CONFIG)
class Meta:
    """The paginator's counts; ``last_page`` lets the remaining pages be fetched at once."""

    current_page: int | None = None
    last_page: int | None = None
    per_page: int | None = None
    total: int | None = None


@dataclass(frozen=True, slots=True, config=_CONFIG)
class Page:
    """A paginated listing: ``{"data": [...], "links": {"next": ...}, "meta": {...}}``."""

    data: list[Server]
    links: Links | None = None
    meta: Meta | None = None


@dataclass(frozen=True, slots=True, config=_CONFIG)
class RawPage:
    """The same page with records left raw, so that one bad record can be set aside alone."""

    data: list[dict[str, Any]]
    links: Links | None = None
    meta: Meta | None = None


# The documented listing is a bare array; a paginated API wraps it in an object. The typed
# adapter validates straight from JSON bytes (the fast path); the raw one is the fallback that
# finds which records are bad. Left to right: pydantic's default "smart" union would also try
# a strict pass first, which for a listing that is fine in lax mode costs half as much again.
LISTING: TypeAdapter[list[Server] | Page] = TypeAdapter(
    Annotated[list[Server] | Page, Field(union_mode="left_to_right")]
)
RAW_LISTING: TypeAdapter[list[dict[str, Any]] | RawPage] = TypeAdapter(
    Annotated[list[dict[str, Any]] | RawPage, Field(union_mode="left_to_right")]
)
SERVER: TypeAdapter[Server] = TypeAdapter(Server)
SERVER_STATUS: TypeAdapter[ServerStatus] = TypeAdapter(ServerStatus)
