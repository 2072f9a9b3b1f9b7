"""Traffic quotas from settings and file, and billing-period arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.api.models import Server
from exporter.cli import SettingsError, load_settings
from exporter.quota import QuotaError, billing_period, load_quotas, parse_size


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "size"),
    [(1024, 1024), ("20TiB", 20 * 2**40), ("1.5 TB", 1.5e12), ("5gb", 5e9), ("7", 7)],
)
def test_sizes(text: object, size: float) -> None:
    assert parse_size(text, "x") == size


@pytest.mark.parametrize("text", ["", "ten", "5 XB", -1, 0, True, [1]])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(QuotaError, match=r"^where: "):
        parse_size(text, "where")


def test_quota_file_overrides_first_match_wins(tmp_path: Path) -> None:
    path = tmp_path / "quotas.yml"
    path.write_text(
        "default: 20TiB\n"
        "servers:\n"
        "  - id: 42\n    quota: 1TiB\n"
        "  - hostname: 'db-*'\n    quota: {outgoing: 5TiB}\n"
        "  - hostname: 'db-main'\n    quota: 9TiB\n"
    )
    quotas = load_quotas(10**12, path)
    web = Server(id="1", hostname="web-1")
    db = Server(id="2", hostname="db-main")
    special = Server(id="42", hostname="db-x")
    assert quotas.for_server(web) == {"incoming": 20 * 2**40, "outgoing": 20 * 2**40}
    assert quotas.for_server(db) == {"outgoing": 5 * 2**40}
    assert quotas.for_server(special) == {"incoming": 2**40, "outgoing": 2**40}


def test_default_from_setting_alone() -> None:
    quotas = load_quotas(5e12, None)
    assert quotas.for_server(Server(id="1", hostname="a")) == {"incoming": 5e12, "outgoing": 5e12}
    assert load_quotas(None, None).for_server(Server(id="1", hostname="a")) == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("default: [1, 2", "not valid YAML"),
        ("surprise: 1", "expected the keys"),
        ("servers: {a: 1}", "must be a list"),
        ("servers:\n  - quota: 1TiB", "match on 'hostname'"),
        ("servers:\n  - id: 1\n    quota: {sideways: 1TiB}", "unknown direction"),
        ("default: lots", "expected a size"),
    ],
)
def test_bad_quota_files_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "q.yml"
    path.write_text(content)
    with pytest.raises(QuotaError, match=message):
        load_quotas(None, path)
    with pytest.raises(SettingsError) as caught:
        load_settings(["--demo", "--traffic.quota-file", str(path)])
    assert "EVOTIC_TRAFFIC_QUOTA_FILE (--traffic.quota-file)" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_quota_setting_accepts_units_and_rejects_nonsense() -> None:
    assert load_settings(["--demo", "--traffic.quota-bytes", "2TiB"]).traffic_quota_bytes == 2**41
    with pytest.raises(SettingsError, match="EVOTIC_TRAFFIC_QUOTA_BYTES"):
        load_settings(["--demo", "--traffic.quota-bytes", "plenty"])
    with pytest.raises(SettingsError, match="EVOTIC_TRAFFIC_PERIOD_START_DAY"):
        load_settings(["--demo", "--traffic.period-start-day", "0"])


@pytest.mark.parametrize(
    ("now", "day", "start", "end"),
    [
        ("2026-11-27T12:00:00", 1, "2026-11-01T00:00:00", "2026-12-01T00:00:00"),
        ("2026-12-31T23:59:59", 1, "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("2026-01-10T00:00:00", 15, "2025-12-15T00:00:00", "2026-01-15T00:00:00"),
        ("2026-01-15T00:00:00", 15, "2026-01-15T00:00:00", "2026-02-15T00:00:00"),
        ("2026-02-28T12:00:00", 31, "2026-02-28T00:00:00", "2026-03-31T00:00:00"),
        ("2026-03-05T00:00:00", 30, "2026-02-28T00:00:00", "2026-03-30T00:00:00"),
    ],
)
def test_billing_period(now: str, day: int, start: str, end: str) -> None:
    assert billing_period(_at(now), day) == (_at(start), _at(end))
