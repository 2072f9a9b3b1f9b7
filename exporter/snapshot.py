"""The immutable result of one successful poll: what the exporter knows about the fleet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.api.models import Server, ServerStatus
from exporter.quota import Quotas


def _no_statuses() -> Mapping[str, ServerStatus]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Snapshot:
    """Servers as listed, task statuses where collected, quotas, and when it was taken.

    Only the poller builds one; everything downstream reads it and nobody changes it, so a
    scrape can read the current one without a lock.
    """

    servers: tuple[Server, ...]
    taken_at: float
    statuses: Mapping[str, ServerStatus] = field(default_factory=_no_statuses)
    quotas: Quotas = field(default_factory=lambda: Quotas({}))
    period: tuple[float, float] | None = None  # billing period start and end, Unix seconds
