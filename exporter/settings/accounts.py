"""The configuration file (``--config.file``): several Evotic accounts served by one exporter.

```yaml
accounts:
  prod:
    token_file: /run/secrets/evotic-prod
    poll_interval: 60
  staging:
    token_file: /run/secrets/evotic-staging
```

Each account's settings are those of the flags and the environment, with what the file names
for that account over them, checked exactly as the settings are: the file wins for what it
names, the flags and variables give the defaults. A mistake is one line naming the file and the
key (``accounts.prod.poll_interval``). Without a file there is one account, ``default``, with
the settings as given.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError, field_validator

from exporter.api.network import ApiRoute, CaFileError, environment_proxy, tls_context
from exporter.settings.model import (
    Problem,
    Settings,
    SettingsError,
    check_sources,
    describe_setting,
    file_problem,
    read_quotas,
    validation_problems,
)
from exporter.settings.quotas import Quotas
from exporter.settings.schema import FileError, KeyProblem, Schema, load_file

DEFAULT_ACCOUNT = "default"
ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")

# The file's keys and the settings they stand for.
KEYS: Mapping[str, str] = {
    "token_file": "api_token_file",
    "api_url": "api_url",
    "poll_interval": "poll_interval",
    "stale_after": "stale_after",
    "collect_status": "collect_status",
    "traffic_quota": "traffic_quota_bytes",
    "traffic_quota_file": "traffic_quota_file",
    "traffic_period_start_day": "traffic_period_start_day",
}
_FIELD_KEYS = {field: key for key, field in KEYS.items()}
# Settings that belong to the process, not to an account: never an account's own.
_PROCESS_FIELDS = frozenset({"config_file", "api_token", "api_token_file"})


class ConfigFileError(FileError):
    """A configuration file that cannot be used."""


class AccountEntry(Schema):
    """One account's part of the file; what it leaves out, the settings give."""

    # A token never goes into this file, which is often less guarded than a secret.
    refused: ClassVar[Mapping[str, str]] = {
        "token": "a token never goes into this file: put it in a file of its own, named by "
        "token_file",
    }

    token_file: Path | None = None
    api_url: str | None = None
    poll_interval: float | None = None
    stale_after: float | None = None
    collect_status: bool | None = None
    traffic_quota: str | float | None = None
    traffic_quota_file: Path | None = None
    traffic_period_start_day: int | None = None

    def given(self) -> dict[str, Any]:
        """The settings this entry names, by field (``null`` included: no traffic quota)."""
        return {KEYS[key]: value for key, value in self.model_dump(exclude_unset=True).items()}


class ConfigFile(Schema):
    """The whole file: a mapping of account names to their settings."""

    unknown_key: ClassVar[str] = "unknown key (expected the key 'accounts')"

    accounts: dict[str, AccountEntry]

    @field_validator("accounts", mode="before")
    @classmethod
    def _named_accounts(cls, value: object) -> object:
        if isinstance(value, dict):
            if not value:
                raise ValueError("names no account")
            for name, entry in value.items():
                if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
                    raise KeyProblem(name, "an account name is 1 to 63 of a-z, 0-9, '_', '.' "
                                     "and '-', starting with a letter or digit")  # fmt: skip
                if entry is None:
                    value[name] = {}
        return value


@dataclass(frozen=True)
class AccountConfig:
    """One account as configured: its settings, its traffic quotas and the way to its API
    (trusted CAs and proxy), each file read."""

    name: str
    settings: Settings
    quotas: Quotas
    route: ApiRoute


def api_route(
    settings: Settings,
    environ: Mapping[str, str],
    contexts: dict[Path | None, ssl.SSLContext] | None = None,
) -> ApiRoute:
    """Whom the client trusts (``--api.ca-file``) and the proxy the standard variables name.

    ``contexts`` holds the TLS contexts made so far, by CA file, for the accounts of one
    reading to share: each context holds its own copy of the whole CA bundle, 0.7 MB.
    Raises ``SettingsError`` for an unusable CA file, ``ProxySettingError`` for a proxy
    variable the client cannot honour.
    """
    contexts = {} if contexts is None else contexts
    if settings.api_ca_file not in contexts:
        try:
            contexts[settings.api_ca_file] = tls_context(settings.api_ca_file)
        except CaFileError as error:
            raise SettingsError([Problem("api_ca_file", error.problem)]) from None
    tls = contexts[settings.api_ca_file]
    if settings.demo:
        return ApiRoute(tls)  # the simulator is on this host, over plain HTTP
    return ApiRoute(tls, environment_proxy(settings.api_url, environ))


def _account(
    name: str,
    settings: Settings,
    environ: Mapping[str, str],
    contexts: dict[Path | None, ssl.SSLContext] | None = None,
) -> AccountConfig:
    route = api_route(settings, environ, contexts)
    return AccountConfig(name, settings, read_quotas(settings), route)


def read_accounts(settings: Settings, environ: Mapping[str, str]) -> dict[str, AccountConfig]:
    """Each account, by name; ``SettingsError`` naming the file and key if one cannot be used,
    ``ProxySettingError`` for a proxy variable that cannot be honoured.

    Reads the configuration file, each account's quota file and checks each token file, once.
    """
    path = settings.config_file
    if path is None:
        return {DEFAULT_ACCOUNT: _account(DEFAULT_ACCOUNT, settings, environ)}
    given = [f for f in ("api_token", "api_token_file") if f in settings.model_fields_set]
    if given:
        raise SettingsError([Problem(f, "cannot be used with --config.file: each account "
                                     "names its own token_file") for f in given])  # fmt: skip
    try:
        document = load_file(path, ConfigFile, ConfigFileError)
    except ConfigFileError as error:
        raise file_problem("config_file", error) from None
    base = {f: getattr(settings, f) for f in settings.model_fields_set - _PROCESS_FIELDS}
    contexts: dict[Path | None, ssl.SSLContext] = {}
    accounts = {}
    for name, entry in document.accounts.items():
        own = entry.given()
        try:
            account = Settings(**{**base, **own})
            check_sources(account)
            accounts[name] = _account(name, account, environ, contexts)
        except ValidationError as error:
            raise _account_problem(path, name, validation_problems(error)[0], own) from None
        except SettingsError as error:
            raise _account_problem(path, name, error.problems[0], own) from None
    return accounts


def _account_problem(path: Path, name: str, problem: Problem, own: Mapping[str, Any]) -> Exception:
    key = f"accounts.{name}"
    message = problem.message
    if problem.field == "api_token":  # no token from anywhere: the file must name one
        key, message = f"{key}.token_file", "is required (or run with --demo)"
    elif problem.field is not None and problem.field in own:
        key = f"{key}.{_FIELD_KEYS[problem.field]}"
    elif problem.field is not None:
        message = f"{describe_setting(problem.field)}: {message}"
    return file_problem("config_file", ConfigFileError(path, key, message))
