"""Settings from flags and environment, and the one-line errors for bad ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.settings.loading import build_parser, load_settings
from exporter.settings.model import (
    OPTIONS,
    Option,
    Settings,
    SettingsError,
    describe_setting,
    exposed_files,
    format_address,
    parse_listen_address,
    read_environment,
)

SECRET = "canary-Settings-9d1f"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("EVOTIC_")]:
        monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings(["--api.token", SECRET])
    assert settings.api_url == "https://evotic.io/api/v1"
    assert settings.api_timeout == 10
    assert settings.poll_interval == 60
    assert settings.collect_status is False
    assert settings.listen_address == "0.0.0.0:19875"
    assert settings.log_level == "info"
    assert settings.log_format == "auto"


def test_environment_and_flags_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOTIC_API_TOKEN", SECRET)
    monkeypatch.setenv("EVOTIC_POLL_INTERVAL", "30")
    monkeypatch.setenv("EVOTIC_COLLECTOR_STATUS", "true")
    monkeypatch.setenv("EVOTIC_LOG_LEVEL", "DEBUG")
    settings = load_settings(["--poll.interval", "15"])
    assert settings.poll_interval == 15
    assert settings.collect_status is True
    assert settings.log_level == "debug"
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == SECRET


def test_every_setting_has_a_flag_and_every_flag_a_setting() -> None:
    fields = set(Settings.model_fields)
    assert {option.field for option in OPTIONS} == fields
    help_text = build_parser().format_help()
    for option in OPTIONS:
        assert option.flag in help_text
        assert option.variable in help_text


def _by_the_rule(flag: str) -> str:
    """The naming rule, written out again: EVOTIC_, the flag without dashes, "." and "-" as "_"."""
    return "EVOTIC_" + re.sub(r"[.-]", "_", flag.removeprefix("--")).upper()


@pytest.mark.parametrize(
    ("flag", "variable"),
    [
        ("--poll.stale-after", "EVOTIC_POLL_STALE_AFTER"),
        ("--collector.status.concurrency", "EVOTIC_COLLECTOR_STATUS_CONCURRENCY"),
        ("--web.listen-address", "EVOTIC_WEB_LISTEN_ADDRESS"),
    ],
)
def test_the_rule_by_example(flag: str, variable: str) -> None:
    assert _by_the_rule(flag) == variable


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.flag)
def test_every_variable_follows_the_naming_rule(option: Option) -> None:
    variable = _by_the_rule(option.flag)
    assert read_environment({variable: "value"}) == {option.field: "value"}
    help_text = " ".join(build_parser().format_help().split())
    assert re.search(rf"{re.escape(option.flag)}\b[^[]*\[{variable}\b", help_text), help_text


def test_every_name_documented_before_the_rule_still_works() -> None:
    # The README named each variable EVOTIC_ + the setting's field name until the rule came.
    for field in Settings.model_fields:
        assert read_environment({f"EVOTIC_{field.upper()}": "value"}) == {field: "value"}


@pytest.mark.parametrize(
    ("alias", "value", "field", "expected"),
    [
        ("EVOTIC_STALE_AFTER", "900", "stale_after", 900.0),
        ("EVOTIC_COLLECT_STATUS", "true", "collect_status", True),
        ("EVOTIC_STATUS_CONCURRENCY", "8", "status_concurrency", 8),
        ("EVOTIC_STATUS_INTERVAL", "120", "status_interval", 120.0),
        ("EVOTIC_LISTEN_ADDRESS", "127.0.0.1:9999", "listen_address", "127.0.0.1:9999"),
    ],
)
def test_each_documented_alias_sets_its_setting(
    monkeypatch: pytest.MonkeyPatch, alias: str, value: str, field: str, expected: object
) -> None:
    assert alias in {alias for option in OPTIONS for alias in option.aliases}
    monkeypatch.setenv(alias, value)
    assert getattr(load_settings(["--demo"]), field) == expected


def test_an_alias_and_its_variable_with_different_values_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVOTIC_POLL_STALE_AFTER", "900")
    monkeypatch.setenv("EVOTIC_STALE_AFTER", "1200")
    with pytest.raises(SettingsError) as caught:
        load_settings(["--demo"])
    assert str(caught.value) == (
        "invalid setting EVOTIC_POLL_STALE_AFTER (--poll.stale-after): set as "
        "EVOTIC_POLL_STALE_AFTER and EVOTIC_STALE_AFTER with different values; "
        "set EVOTIC_POLL_STALE_AFTER only"
    )


def test_an_alias_and_its_variable_with_the_same_value_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVOTIC_WEB_LISTEN_ADDRESS", "127.0.0.1:9999")
    monkeypatch.setenv("EVOTIC_LISTEN_ADDRESS", "127.0.0.1:9999")
    assert load_settings(["--demo"]).listen_address == "127.0.0.1:9999"


def test_a_flag_wins_over_an_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOTIC_STALE_AFTER", "900")
    assert load_settings(["--demo", "--poll.stale-after", "1800"]).stale_after == 1800


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "EVOTIC_API_TOKEN (--api.token): a token is required"),
        (["--api.token", SECRET, "--poll.interval", "0"], "EVOTIC_POLL_INTERVAL (--poll.interval)"),
        (["--api.token", SECRET, "--api.url", "not a url"], "EVOTIC_API_URL (--api.url)"),
        (["--api.token", SECRET, "--api.url", f"https://u:{SECRET}@x/"], "EVOTIC_API_URL"),
        (["--api.token", SECRET, "--api.timeout", "-1"], "EVOTIC_API_TIMEOUT (--api.timeout)"),
        (["--api.token-file", "/nonexistent/token"], "cannot read /nonexistent/token"),
        (
            ["--api.token", SECRET, "--web.listen-address", "nowhere"],
            "EVOTIC_WEB_LISTEN_ADDRESS (--web.listen-address)",
        ),
        (["--api.token", SECRET, "--log.level", "chatty"], "EVOTIC_LOG_LEVEL (--log.level)"),
        (["--api.token", SECRET, "--api.token-file", "/etc/hostname"], "not both"),
    ],
)
def test_invalid_settings_give_one_line_without_the_secret(argv: list[str], expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(argv)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("0.0.0.0:70000", "port 70000 is out of range 0-65535"),
        ("127.0.0.1:-1", "port -1 is out of range 0-65535"),
        ("127.0.0.1:http", "port 'http' is not a number"),
        ("127.0.0.1:", "no port after the colon"),
        ("nowhere", "no port: expected host:port, as in nowhere:19875"),
        ("[::1]", "no port: expected host:port, as in [::1]:19875"),
        ("::1:19879", "IPv6 addresses need brackets: [::1]:19879"),
        ("fe80::1", "IPv6 addresses need brackets and a port: [fe80::1]:19875"),
        ("[::1:19875", "'[::1:19875' has no ']' to close the IPv6 address"),
        ("[::1]19875", "expected a colon and a port after [::1], got '19875'"),
        ("[127.0.0.1]:80", "brackets are for IPv6 addresses only, not '127.0.0.1'"),
        ("localhost:80:90", "the host 'localhost:80' has a stray colon"),
    ],
)
def test_a_bad_listen_address_gets_one_line_saying_what_is_wrong(
    address: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(["--demo", "--web.listen-address", address])
    assert str(caught.value) == f"invalid setting {describe_setting('listen_address')}: {problem}"


@pytest.mark.parametrize(
    ("address", "host", "port", "shown"),
    [
        ("[::1]:19875", "::1", 19875, "[::1]:19875"),
        ("[::]:0", "::", 0, "[::]:0"),
        (":19875", "0.0.0.0", 19875, "0.0.0.0:19875"),
        ("localhost:65535", "localhost", 65535, "localhost:65535"),
    ],
)
def test_a_listen_address_is_shown_as_it_can_be_written_again(
    address: str, host: str, port: int, shown: str
) -> None:
    assert load_settings(["--demo", "--web.listen-address", address]).listen_address == address
    assert parse_listen_address(address) == (host, port)
    assert format_address(host, port) == shown
    assert parse_listen_address(shown) == (host, port)


@pytest.mark.parametrize(
    ("argv", "minimum"),
    [
        (["--poll.stale-after", "119"], "119 s is less than twice --poll.interval (60 s); "
                                        "set at least 120 s"),
        (["--poll.interval", "30", "--poll.stale-after", "45"], "set at least 60 s"),
        # Raising the interval alone leaves the default (600 s) too short for it.
        (["--poll.interval", "600"], "600 s is less than twice --poll.interval (600 s); "
                                     "set at least 1200 s"),
    ],
)  # fmt: skip
def test_stale_after_shorter_than_two_intervals_is_refused(argv: list[str], minimum: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(["--demo", *argv])
    message = str(caught.value)
    assert message.startswith("invalid setting EVOTIC_POLL_STALE_AFTER (--poll.stale-after): ")
    assert minimum in message
    assert "\n" not in message


def test_stale_after_of_two_intervals_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(["--demo", "--poll.stale-after", "120"]).stale_after == 120
    monkeypatch.setenv("EVOTIC_POLL_INTERVAL", "300")
    assert load_settings(["--demo", "--poll.stale-after", "600"]).poll_interval == 300


def test_token_file_must_not_be_empty(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("  \n")
    with pytest.raises(SettingsError, match="is empty"):
        load_settings(["--api.token-file", str(empty)])


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (f"{SECRET}\nsecond-line", "holds a line break or another control character"),
        (f"{SECRET}\tx", "holds a line break or another control character"),
        (f"{SECRET}\x7f", "holds a line break or another control character"),
        (f"{SECRET}é", "beyond ASCII"),
        (f"Bearer {SECRET}", "give the token alone, the exporter sends 'Bearer ' itself"),
    ],
)
def test_a_token_that_cannot_be_sent_stops_the_start_up(
    tmp_path: Path, token: str, problem: str
) -> None:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    for argv, named in (
        (["--api.token", token], "EVOTIC_API_TOKEN (--api.token): "),
        (["--api.token-file", str(path)], f"EVOTIC_API_TOKEN_FILE (--api.token-file): {path} "),
    ):
        with pytest.raises(SettingsError) as caught:
            load_settings(argv)
        message = str(caught.value)
        assert named in message
        assert problem in message
        assert "\n" not in message
        assert SECRET not in message


def test_only_white_space_around_the_token_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"\n  {SECRET}  \r\n")
    assert load_settings(["--api.token-file", str(path)]).api_token_file == path
    settings = load_settings(["--api.token", f" {SECRET}\n"])
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == SECRET


def test_demo_needs_no_token() -> None:
    assert load_settings(["--demo"]).demo is True


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--demo", "--api.url", "https://api.example/v1"], "EVOTIC_API_URL (--api.url)"),
        (["--demo", "--api.token", SECRET], "EVOTIC_API_TOKEN (--api.token)"),
        (
            ["--demo", "--api.token-file", "/etc/hostname"],
            "EVOTIC_API_TOKEN_FILE (--api.token-file)",
        ),
        (["--demo", "--api.ca-file", "/etc/hostname"], "EVOTIC_API_CA_FILE (--api.ca-file)"),
    ],
)
def test_demo_refuses_an_api_or_a_token_it_would_ignore(argv: list[str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(argv)
    assert f"{named}: cannot be used with --demo" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_demo_refuses_an_api_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOTIC_API_URL", "https://api.example/v1")
    with pytest.raises(SettingsError, match="EVOTIC_API_URL"):
        load_settings(["--demo"])


def test_a_mistyped_variable_is_refused_with_the_nearest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVOTIC_WEB_CONFIG", "/etc/evotic/web.yml")
    monkeypatch.setenv("EVOTIC_BANANA", "1")
    with pytest.raises(SettingsError) as caught:
        load_settings(["--demo"])
    message = str(caught.value)
    assert "EVOTIC_WEB_CONFIG: unknown variable; did you mean EVOTIC_WEB_CONFIG_FILE" in message
    assert "EVOTIC_BANANA: unknown variable" in message
    assert "\n" not in message


def test_a_variable_in_lower_case_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("evotic_poll_interval", "30")
    with pytest.raises(SettingsError) as caught:
        load_settings(["--demo"])
    assert str(caught.value) == (
        "invalid setting evotic_poll_interval: unknown variable; "
        "did you mean EVOTIC_POLL_INTERVAL (--poll.interval)?"
    )


def test_the_simulators_variables_may_share_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVOTIC_SIMULATOR_TOKEN", "sim")
    assert load_settings(["--demo"]).demo


@pytest.mark.parametrize(
    ("mode", "others"),
    [
        (0o600, ()),
        (0o640, ()),  # a group is how Kubernetes (fsGroup) lets the exporter read a secret
        (0o644, ("read",)),
        (0o604, ("read",)),
        (0o602, ("write",)),
        (0o666, ("read", "write")),
        (0o660, ()),
    ],
)
def test_files_that_other_users_may_read_or_change(
    tmp_path: Path, mode: int, others: tuple[str, ...]
) -> None:
    files = {name: tmp_path / name for name in ("token", "web.yml", "tls.key")}
    for path in files.values():
        path.write_text("x")
        path.chmod(mode)
    settings = Settings(api_token_file=files["token"], web_config_file=files["web.yml"])
    found = {f.what: f for f in exposed_files(settings, files["tls.key"])}
    expected = ("token file", "TLS key file", "web configuration file") if others else ()
    assert {what: f.others for what, f in found.items()} == dict.fromkeys(expected, others)
    for exposed in found.values():
        assert exposed.mode == mode
        assert exposed.fix == f"chmod o-rwx {exposed.path}"


def test_no_files_nothing_exposed() -> None:
    assert exposed_files(Settings(demo=True), None) == []
