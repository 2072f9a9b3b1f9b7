"""Traffic quotas from settings and file, and billing-period arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from exporter.api.models import Server
from exporter.settings.loading import load_settings
from exporter.settings.model import SettingsError
from exporter.settings.quotas import (
    QuotaError,
    QuotaFile,
    Rule,
    Size,
    billing_period,
    load_quotas,
    parse_size,
)
from exporter.settings.schema import describe


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
    assert quotas.for_server(db) == {"incoming": 20 * 2**40, "outgoing": 5 * 2**40}
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


def _quota_error(tmp_path: Path, content: str) -> QuotaError:
    path = tmp_path / "q.yml"
    path.write_text(content)
    with pytest.raises(QuotaError) as caught:
        load_quotas(None, path)
    assert caught.value.path == path
    assert "\n" not in str(caught.value)
    return caught.value


_NO_DIRECTION = "names no direction: give a size, or incoming and outgoing (null: no quota)"


@pytest.mark.parametrize(
    ("content", "key", "problem"),
    [
        ("servers:\n  - id: 1\n    quota: {incoming: lots}\n", "servers[0].quota.incoming",
         "expected a size such as 20TiB, got 'lots'"),
        ("servers:\n  - id: 1\n    quota: 5 XB\n", "servers[0].quota",
         "unknown unit 'XB' (use B, GB, GiB, TB, TiB…)"),
        ("default: {outgoing: 0}\n", "default.outgoing", "size must be positive"),
        ("default: true\n", "default", "expected a size, got True"),
        ("servers:\n  - id: 1\n    quota: 1TiB\n  - id: true\n    quota: 1TiB\n",
         "servers[1].id", "must be a string"),
        ("servers:\n  - hostname: [a]\n    quota: 1TiB\n", "servers[0].hostname",
         "must be a string"),
        ("servers:\n  - hostname: 42\n    quota: 1TiB\n", "servers[0].hostname",
         "must be a string"),
        ("servers:\n  - hostname: ''\n    quota: 1TiB\n", "servers[0].hostname",
         "must not be empty (it would match no server)"),
        ("servers:\n  - id: [1, 2]\n    quota: 1TiB\n", "servers[0].id", "must be a string"),
        ("servers:\n  - id: 4.2\n    quota: 1TiB\n", "servers[0].id", "must be a string"),
        ("servers:\n  - id: ''\n    quota: 1TiB\n", "servers[0].id",
         "must not be empty (it would match no server)"),
        ("servers: [1TiB]\n", "servers[0]", "must be a mapping of keys to values"),
        ("servers:\n  - id: 1\n", "servers[0].quota", "is required"),
        ("servers:\n  - id: 1\n    quota: {}\n", "servers[0].quota", _NO_DIRECTION),
        ("default: {}\n", "default", _NO_DIRECTION),
        ("servers:\n  - id: 1\n    quota: 1TiB\n    hostnme: a\n", "servers[0].hostnme",
         "unknown key (known: hostname, id, quota)"),
        ("- 1TiB\n", "", "must be a mapping of keys to values"),
    ],
)  # fmt: skip
def test_a_mistake_names_its_key_in_fields(
    tmp_path: Path, content: str, key: str, problem: str
) -> None:
    error = _quota_error(tmp_path, content)
    assert (error.key, error.problem) == (key, problem)
    assert str(error) == f"{key or 'the file'}: {problem}"


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    error = _quota_error(tmp_path, "default: 1TiB\nservers: []\ndefault: 2TiB\n")
    assert error.key is None
    assert (
        error.problem
        == f"{error.path} is not valid YAML at line 3, column 1: key 'default' is given twice"
    )
    error = _quota_error(tmp_path, "servers:\n  - id: 1\n    quota: 1TiB\n    id: 2\n")
    assert "line 4" in str(error)
    assert "key 'id' is given twice" in str(error)
    # Every mapping of the file is read the same way: a rule's quota, and the flow style.
    error = _quota_error(
        tmp_path, "servers:\n  - id: 1\n    quota:\n      outgoing: 1TiB\n      outgoing: 2TiB\n"
    )
    assert error.problem.endswith("at line 5, column 7: key 'outgoing' is given twice")
    error = _quota_error(tmp_path, "servers: [{hostname: a, quota: 1TiB, hostname: b}]\n")
    assert error.problem.endswith("at line 1, column 38: key 'hostname' is given twice")


def test_an_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yml"
    with pytest.raises(QuotaError) as caught:
        load_quotas(None, missing)
    assert caught.value.path == missing
    assert caught.value.key is None
    assert str(caught.value) == f"cannot read {missing}: No such file or directory"


def test_ids_may_be_numbers_and_null_means_no_quota(tmp_path: Path) -> None:
    path = tmp_path / "q.yml"
    path.write_text(
        "servers:\n"
        "  - id: 42\n    quota: {incoming: null, outgoing: null}\n"
        "  - hostname: 'web-*'\n    quota: 1TB\n"
    )
    quotas = load_quotas(5e12, path)
    assert quotas.rules == (
        Rule(quota={}, server_id="42"),
        Rule(quota={"incoming": 1e12, "outgoing": 1e12}, hostname="web-*"),
    )
    assert quotas.default == {"incoming": 5e12, "outgoing": 5e12}
    assert quotas.for_server(Server(id="42", hostname="web-1")) == {}


@pytest.mark.parametrize(
    ("default", "rule", "expected"),
    [
        # A direction a rule leaves out keeps the default's quota for that direction...
        ("", "{outgoing: 5TiB}", {"incoming": 2e12, "outgoing": 5 * 2**40}),
        # ...and null says that it has none.
        ("", "{incoming: null, outgoing: 5TiB}", {"outgoing": 5 * 2**40}),
        # The file's default falls back the same way to EVOTIC_TRAFFIC_QUOTA_BYTES.
        ("default: {incoming: 3TB}\n", "{outgoing: 5TB}", {"incoming": 3e12, "outgoing": 5e12}),
        ("default: {incoming: null}\n", "{outgoing: 5TB}", {"outgoing": 5e12}),
        ("default: 3TB\n", "{incoming: 1TB}", {"incoming": 1e12, "outgoing": 3e12}),
        ("default: 3TB\n", "4TB", {"incoming": 4e12, "outgoing": 4e12}),
    ],
)
def test_a_direction_left_out_falls_back_to_the_level_below(
    tmp_path: Path, default: str, rule: str, expected: dict[str, float]
) -> None:
    path = tmp_path / "q.yml"
    path.write_text(f"{default}servers:\n  - hostname: 'db-*'\n    quota: {rule}\n")
    assert load_quotas(2e12, path).for_server(Server(id="1", hostname="db-1")) == expected


def test_the_file_default_alone_falls_back_to_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "q.yml"
    path.write_text("default: {outgoing: 7TB}\n")
    assert load_quotas(2e12, path).default == {"incoming": 2e12, "outgoing": 7e12}
    assert load_quotas(None, path).default == {"outgoing": 7e12}
    path.write_text("servers: []\n")
    assert load_quotas(2e12, path).default == {"incoming": 2e12, "outgoing": 2e12}


def test_parse_size_errors_carry_the_key_and_the_problem() -> None:
    with pytest.raises(QuotaError) as caught:
        parse_size("5 XB")
    assert (caught.value.path, caught.value.key) == (None, "size")
    assert caught.value.problem == "unknown unit 'XB' (use B, GB, GiB, TB, TiB…)"


class _Sized(BaseModel):
    size: Size | None = None


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1099511627776, 2**40),
        ("20TiB", 20 * 2**40),
        ("1.5 TB", 1.5e12),
        ("5TB", 5e12),
        (None, None),
    ],
)
def test_size_is_a_pydantic_type(value: object, size: float | None) -> None:
    assert _Sized(size=value).size == size


@pytest.mark.parametrize("value", [0, -5, 0.0, True, False, "5 XB", "ten", "", "-1TB", [1]])
def test_size_refuses_as_parse_size_does(value: object) -> None:
    with pytest.raises(ValidationError) as invalid:
        _Sized(size=value)
    with pytest.raises(QuotaError) as refused:
        parse_size(value, "size")
    assert describe(invalid.value) == [("size", refused.value.problem)]
    assert str(refused.value) == f"size: {refused.value.problem}"


def test_describe_reports_every_mistake_by_dotted_key() -> None:
    document = {
        "default": {"incoming": "lots", "outgoing": "5 XB"},
        "servers": [{"id": 1, "quota": 1}, {"quota": "1TB"}],
    }
    with pytest.raises(ValidationError) as invalid:
        QuotaFile.model_validate(document)
    assert describe(invalid.value) == [
        ("default.incoming", "expected a size such as 20TiB, got 'lots'"),
        ("default.outgoing", "unknown unit 'XB' (use B, GB, GiB, TB, TiB…)"),
        ("servers[1]", "match on 'hostname' (a pattern) or 'id'"),
    ]


def test_a_rule_with_both_hostname_and_id_is_refused(tmp_path: Path) -> None:
    # Read as "and" it matches one server at most, read as "or" it matches many: neither is
    # what everyone who writes it means, so it is refused and two rules say "or".
    error = _quota_error(tmp_path, "servers:\n  - hostname: 'db-*'\n    id: 42\n    quota: 1TiB\n")
    assert (error.key, error.problem) == (
        "servers[0]",
        "give either 'hostname' or 'id', not both (a rule for each matches either)",
    )


def test_a_settings_error_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "q.yml"
    path.write_text("servers:\n  - hostname: [db-1, db-2]\n    quota: 1TiB\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(["--demo", "--traffic.quota-file", str(path)])
    message = str(caught.value)
    assert message.endswith(
        "EVOTIC_TRAFFIC_QUOTA_FILE (--traffic.quota-file): "
        f"{path}: servers[0].hostname: must be a string"
    )
    assert "\n" not in message
    # A file that is no YAML at all names itself once.
    path.write_text("default: [1, 2")
    with pytest.raises(SettingsError) as caught:
        load_settings(["--demo", "--traffic.quota-file", str(path)])
    assert str(caught.value).count(str(path)) == 1


def test_hostnames_match_in_any_case_and_ids_exactly(tmp_path: Path) -> None:
    path = tmp_path / "q.yml"
    path.write_text(
        "servers:\n"
        "  - hostname: 'DB-[a-c]*.Example.COM'\n    quota: 1TiB\n"
        "  - id: Srv-7\n    quota: 2TiB\n"
    )
    quotas = load_quotas(5e12, path)
    both = {"incoming": 2**40, "outgoing": 2**40}
    assert quotas.for_server(Server(id="1", hostname="db-b1.example.com")) == both
    assert quotas.for_server(Server(id="2", hostname="Db-A2.EXAMPLE.com")) == both
    assert quotas.for_server(Server(id="3", hostname="db-d3.example.com")) == quotas.default
    assert quotas.for_server(Server(id="Srv-7", hostname="x"))["outgoing"] == 2 * 2**40
    assert quotas.for_server(Server(id="srv-7", hostname="x")) == quotas.default
