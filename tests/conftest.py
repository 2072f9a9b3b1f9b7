"""Shared fixtures: the sample listing, and the paths of golden files."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.api.client import parse_listing_page
from exporter.api.models import ServerStatus
from exporter.polling.snapshot import Snapshot
from exporter.settings.quotas import Quotas, Rule

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def sample_listing() -> bytes:
    return (DATA / "servers.json").read_bytes()


@pytest.fixture
def sample_snapshot(sample_listing: bytes) -> Snapshot:
    servers = tuple(parse_listing_page(sample_listing).servers)
    statuses = {
        "1": ServerStatus(status="creating the backup", real_status="started",
                          is_processing=True, progress=53),
        "3": ServerStatus(status="stopped", real_status="stopped", is_processing=False,
                          progress=100),
    }  # fmt: skip
    quotas = Quotas(
        default={"incoming": 2.0**40, "outgoing": 2.0**40},
        rules=(Rule(quota={"outgoing": 5 * 2.0**30}, hostname="サーバー-*"),),
    )
    return Snapshot(
        servers=servers, taken_at=1_700_000_000.0, statuses=statuses, quotas=quotas,
        period=(1_698_796_800.0, 1_701_388_800.0),
    )  # fmt: skip
