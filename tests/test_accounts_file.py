"""The configuration file of several accounts: what each account ends up with, and the one-line
error for each way the file can be wrong."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from exporter.settings.accounts import DEFAULT_ACCOUNT
from exporter.settings.loading import load
from exporter.settings.model import SettingsError

from .test_webconfig import make_pki

TOKEN = "canary-AccountsFile-7c1e"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("EVOTIC_")]:
        monkeypatch.delenv(name)


def token_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.token"
    path.write_text(f"{TOKEN}-{name}\n")
    path.chmod(0o600)
    return path


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.yml"
    path.write_text(text)
    return path


def test_without_a_file_there_is_one_account_named_default() -> None:
    loaded = load(["--api.token", TOKEN, "--poll.interval", "30"])
    assert list(loaded.accounts) == [DEFAULT_ACCOUNT]
    assert loaded.accounts[DEFAULT_ACCOUNT].settings == loaded.settings


def test_the_file_wins_for_what_it_names_and_the_settings_give_the_rest(tmp_path: Path) -> None:
    prod, staging = token_file(tmp_path, "prod"), token_file(tmp_path, "staging")
    path = config(
        tmp_path,
        f"""
accounts:
  prod:
    token_file: {prod}
    api_url: https://eu.evotic.example/api/v1
    poll_interval: 120
    collect_status: true
    traffic_quota: 20TiB
    traffic_period_start_day: 5
  staging:
    token_file: {staging}
""",
    )
    loaded = load(["--config.file", str(path), "--poll.interval", "30",
                   "--traffic.quota-bytes", "1TiB"],
                  {"EVOTIC_POLL_STALE_AFTER": "900", "EVOTIC_API_TIMEOUT": "7"})  # fmt: skip
    assert list(loaded.accounts) == ["prod", "staging"]
    first, second = loaded.accounts["prod"].settings, loaded.accounts["staging"].settings
    assert (first.api_url, first.poll_interval, first.collect_status) == (
        "https://eu.evotic.example/api/v1", 120, True)  # fmt: skip
    assert (first.traffic_quota_bytes, first.traffic_period_start_day) == (20 * 2**40, 5)
    assert (first.api_token_file, second.api_token_file) == (prod, staging)
    # What the file leaves out comes from the flags and the environment.
    assert (second.api_url, second.poll_interval, second.collect_status) == (
        "https://evotic.io/api/v1", 30, False)  # fmt: skip
    assert second.traffic_quota_bytes == 2**40
    assert first.stale_after == second.stale_after == 900
    assert first.api_timeout == second.api_timeout == 7
    assert loaded.accounts["prod"].quotas.default == {"incoming": 20 * 2**40,
                                                      "outgoing": 20 * 2**40}  # fmt: skip


def test_null_quota_means_no_quota_for_that_account(tmp_path: Path) -> None:
    path = config(tmp_path, f"accounts:\n  a:\n    token_file: {token_file(tmp_path, 'a')}\n"
                  "    traffic_quota: null\n")  # fmt: skip
    loaded = load(["--config.file", str(path), "--traffic.quota-bytes", "1TiB"])
    assert loaded.accounts["a"].settings.traffic_quota_bytes is None
    assert loaded.accounts["a"].quotas.default == {}


def test_an_account_with_no_settings_in_demo_mode(tmp_path: Path) -> None:
    path = config(tmp_path, "accounts:\n  one:\n  two: {}\n")
    loaded = load(["--demo", "--config.file", str(path)])
    assert list(loaded.accounts) == ["one", "two"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("accounts: {}", "accounts: names no account"),
        ("{}", "accounts: is required"),
        ("acounts: {}", "acounts: unknown key (expected the key 'accounts')"),
        ("accounts:\n  Prod: {token_file: /t}", "accounts.Prod: an account name is 1 to 63"),
        ("accounts:\n  _x: {token_file: /t}", "accounts._x: an account name"),
        (f"accounts:\n  {'a' * 64}: {{token_file: /t}}", "an account name is 1 to 63"),
        ("accounts:\n  a: {token: abc}", "accounts.a.token: a token never goes into this file"),
        ("accounts:\n  a: {poll_intervall: 5}", "accounts.a.poll_intervall: unknown key"),
        ("accounts:\n  a: {}", "accounts.a.token_file: is required"),
        ("accounts:\n  a: {token_file: TOKEN, poll_interval: 0.5}",
         "accounts.a.poll_interval: Input should be greater than or equal to 1"),
        ("accounts:\n  a: {token_file: TOKEN, api_url: ftp://x}",
         "accounts.a.api_url: must be an http:// or https:// URL"),
        ("accounts:\n  a: {token_file: TOKEN, traffic_quota: plenty}",
         "accounts.a.traffic_quota: "),
        ("accounts:\n  a: {token_file: TOKEN, collect_status: maybe}",
         "accounts.a.collect_status: must be true or false"),
        ("accounts:\n  a: {token_file: /nonexistent/token}", "accounts.a.token_file: "),
        # The file's poll interval against the environment's stale-after: both are named.
        ("accounts:\n  a: {token_file: TOKEN, poll_interval: 600}",
         "accounts.a: EVOTIC_POLL_STALE_AFTER (--poll.stale-after): 600 s is less than twice"),
        ("accounts:\n  a: {token_file: TOKEN, traffic_quota_file: /nonexistent.yml}",
         "accounts.a.traffic_quota_file: .*cannot read /nonexistent.yml"),
        ("accounts: [a, b]", "accounts: must be a mapping"),
    ],
)  # fmt: skip
def test_each_mistake_is_one_line_naming_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = config(tmp_path, text.replace("TOKEN", str(token_file(tmp_path, "t"))))
    with pytest.raises(SettingsError) as caught:
        load(["--config.file", str(path)])
    line = str(caught.value)
    assert line.startswith(f"invalid setting EVOTIC_CONFIG_FILE (--config.file): {path}")
    assert message in line or re.search(message, line), line
    assert "\n" not in line
    assert TOKEN not in line


def test_a_token_beside_the_file_is_refused(tmp_path: Path) -> None:
    path = config(tmp_path, f"accounts:\n  a: {{token_file: {token_file(tmp_path, 'a')}}}\n")
    with pytest.raises(SettingsError, match=r"EVOTIC_API_TOKEN .* cannot be used with --config"):
        load(["--config.file", str(path), "--api.token", TOKEN])
    with pytest.raises(SettingsError, match="each account names its own token_file"):
        load(["--config.file", str(path)], {"EVOTIC_API_TOKEN_FILE": "/run/token"})


def test_the_demo_refuses_an_account_that_names_a_token_or_an_api(tmp_path: Path) -> None:
    path = config(tmp_path, "accounts:\n  a: {api_url: https://evotic.io/api/v1}\n")
    with pytest.raises(SettingsError, match=r"accounts\.a\.api_url: cannot be used with --demo"):
        load(["--demo", "--config.file", str(path)])


def test_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"cannot read .*missing\.yml"):
        load(["--config.file", str(tmp_path / "missing.yml")])
    with pytest.raises(SettingsError, match="is not valid YAML at line"):
        load(["--config.file", str(config(tmp_path, "accounts: [\n"))])


def test_the_accounts_share_one_tls_context_each_trusting_the_ca_file(tmp_path: Path) -> None:
    # A context holds its own copy of the whole CA bundle (0.7 MB): one for every account.
    pki = make_pki(tmp_path)
    names = ("prod", "staging", "eu")
    entries = "".join(f"  {name}:\n    token_file: {token_file(tmp_path, name)}\n"
                      for name in names)  # fmt: skip
    path = config(tmp_path, f"accounts:\n{entries}")
    plain = load(["--config.file", str(path)]).accounts
    assert len({id(plain[name].route.tls) for name in names}) == 1
    trusting = load(["--config.file", str(path), "--api.ca-file", str(pki.ca)]).accounts
    assert len({id(trusting[name].route.tls) for name in names}) == 1
    # Each reading makes its own, and the CA file's certificate is in the one they share.
    assert trusting["prod"].route.tls is not plain["prod"].route.tls
    ours = trusting["eu"].route.tls.cert_store_stats()["x509_ca"]
    assert ours == plain["eu"].route.tls.cert_store_stats()["x509_ca"] + 1
