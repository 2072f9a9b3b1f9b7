"""Pydantic models of the Evotic API's answers.

They accept what a real API sends (unknown fields, nulls while a server installs, ids as numbers
or strings) and refuse what no real server can have (negative or non-finite amounts), so a
broken record is caught here rather than exported as a wrong number.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, field_validator

# An upper bound far above any real server (2^53 keeps every value exact in a float sample).
_MAX_AMOUNT = float(2**53)

Amount = Annotated[float, Field(ge=0, le=_MAX_AMOUNT, allow_inf_nan=False)]


def _id_to_str(value: Any) -> Any:
    # The documentation types the id as a string but shows a number; bool is an int subclass.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


ServerId = Annotated[str, BeforeValidator(_id_to_str), Field(min_length=1, max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=1024)


class Specifications(_Model):
    """Booked resources: cores, memory in MB and disk in GB (read as MiB and GiB)."""

    cpu: Amount | None = None
    ram: Amount | None = None
    disk: Amount | None = None


class IpAddress(_Model):
    """One address of a server; ``family`` is derived, so a malformed address is refused."""

    ip: str
    is_primary: bool = False

    @field_validator("ip")
    @classmethod
    def _valid_ip(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.ip else "ipv4"


class TrafficDirection(_Model):
    """One direction of traffic: bytes this billing period, last period, and the limit flag."""

    value: Amount | None = None
    prev: Amount | None = None
    is_exceeded: bool | None = None


class Traffic(_Model):
    incoming: TrafficDirection | None = None
    outgoing: TrafficDirection | None = None


class Usage(_Model):
    """Current usage: CPU in percent, memory in MB, disk in GB, traffic in bytes."""

    cpu: Amount | None = None
    ram: Amount | None = None
    disk: Amount | None = None
    traffic: Traffic | None = None


class Server(_Model):
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


class ServerStatus(_Model):
    """The answer of ``GET /servers/{id}/status``: a running task and its progress."""

    status: str | None = None
    real_status: str | None = None
    is_processing: bool = False
    progress: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None


class Links(_Model):
    next: str | None = None


class Meta(_Model):
    current_page: int | None = None
    last_page: int | None = None
    per_page: int | None = None
    total: int | None = None


class Page(_Model):
    """A paginated listing: ``{"data": [...], "links": {"next": ...}, "meta": {...}}``."""

    data: list[Server]
    links: Links | None = None
    meta: Meta | None = None


class RawPage(_Model):
    """The same page with records left raw, so that one bad record can be set aside alone."""

    data: list[dict[str, Any]]
    links: Links | None = None
    meta: Meta | None = None


# The documented listing is a bare array; a paginated API wraps it in an object. The typed
# adapter validates straight from JSON bytes (the fast path); the raw one is the fallback that
# finds which records are bad.
LISTING: TypeAdapter[list[Server] | Page] = TypeAdapter(list[Server] | Page)
RAW_LISTING: TypeAdapter[list[dict[str, Any]] | RawPage] = TypeAdapter(
    list[dict[str, Any]] | RawPage
)
SERVER: TypeAdapter[Server] = TypeAdapter(Server)
SERVER_STATUS: TypeAdapter[ServerStatus] = TypeAdapter(ServerStatus)
