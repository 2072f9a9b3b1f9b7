"""Settings: one pydantic-settings class; each setting is an ``EVOTIC_*`` variable and a flag.

One rule names them all: the variable is ``EVOTIC_`` and the flag without its leading dashes,
upper-cased, with "." and "-" turned into "_" (``--poll.stale-after``: ``EVOTIC_POLL_STALE_AFTER``).
``variable_name`` is that rule; a few settings also accept the name they had before it.

A flag given on the command line wins over the environment. An invalid setting is reported as
one line naming both its variable and its flag; the token's value is never part of it. Every
problem is a ``Problem`` naming its field; the line is built from those fields, never parsed.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from exporter.api.errors import TokenFileError
from exporter.api.token import clean_token, read_token_file
from exporter.settings.quotas import QuotaError, Quotas, Size, load_quotas
from exporter.settings.schema import FileError

DEFAULT_PORT = 19875
ENV_PREFIX = "EVOTIC_"


def variable_name(flag: str) -> str:
    """The variable of a flag: ``--web.listen-address`` -> ``EVOTIC_WEB_LISTEN_ADDRESS``."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace(".", "_").replace("-", "_")


@dataclass(frozen=True)
class Option:
    """How a setting is spelled on the command line and in the environment.

    ``aliases`` are variable names documented before the naming rule; they are still read.
    """

    field: str
    flag: str
    help: str
    boolean: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def variable(self) -> str:
        return variable_name(self.flag)


class Settings(BaseSettings):
    """Everything the exporter can be told at start-up.

    The values come in as arguments: the flags over what ``read_environment`` found.
    """

    model_config = SettingsConfigDict(
        hide_input_in_errors=True,
        extra="forbid",
        frozen=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # pydantic-settings would read EVOTIC_ + the field's name; read_environment applies
        # the naming rule and the aliases instead, and refuses typos and conflicts.
        return (init_settings,)

    api_url: str = "https://evotic.io/api/v1"
    api_token: SecretStr | None = None
    api_token_file: Path | None = None
    api_timeout: float = Field(default=10.0, gt=0, le=300)
    api_ca_file: Path | None = None
    poll_interval: float = Field(default=60.0, ge=1, le=86400)
    stale_after: float = Field(default=600.0, gt=0, validate_default=True)
    collect_status: bool = False
    status_concurrency: int = Field(default=4, ge=1, le=64)
    status_interval: float = Field(default=300.0, ge=1)
    listen_address: str = f"0.0.0.0:{DEFAULT_PORT}"
    web_config_file: Path | None = None
    web_enable_lifecycle: bool = False
    config_file: Path | None = None
    traffic_quota_bytes: Size | None = None
    traffic_quota_file: Path | None = None
    traffic_period_start_day: int = Field(default=1, ge=1, le=31)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"
    demo: bool = False

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not carry credentials, a query or a fragment")
        return value.rstrip("/")

    @field_validator("api_token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        # TokenProblem is a ValueError: its message becomes the setting's problem, no value.
        return None if value is None else SecretStr(clean_token(value.get_secret_value()))

    @field_validator("stale_after")
    @classmethod
    def _outlasts_two_polls(cls, value: float, info: ValidationInfo) -> float:
        # A poll starts every interval and may take up to its deadline, 90 % of the interval:
        # between two good polls the data grows up to 1.9 intervals old. Less than twice the
        # interval would drop the series between good polls.
        interval = info.data.get("poll_interval")
        if interval is not None and value < 2 * interval:
            raise ValueError(
                f"{value:g} s is less than twice --poll.interval ({interval:g} s); set at least "
                f"{2 * interval:g} s: a poll may take up to 90 % of the interval, so data is up "
                "to 1.9 intervals old between two good polls"
            )
        return value

    @field_validator("traffic_quota_bytes", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("listen_address")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: which field (``None``: the settings as a whole, or
    ``variable``, an environment variable that names no setting)."""

    field: str | None
    message: str
    variable: str | None = None

    @property
    def subject(self) -> str:
        if self.field is not None:
            return describe_setting(self.field)
        return self.variable or "settings"


class SettingsError(Exception):
    """Settings that cannot start the exporter; ``str()`` is one line without secrets."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        return "invalid setting " + "; ".join(f"{p.subject}: {p.message}" for p in self.problems)


def check_sources(settings: Settings) -> None:
    """The checks that span fields: exactly one usable token source unless in demo mode.

    The token file is read here once, so that a missing or empty file stops the start-up;
    the poller reads it again at every poll.
    """
    if settings.config_file is not None:
        return  # each account of the file is checked on its own (exporter.settings.accounts)
    if settings.demo:
        # The demo polls its own simulator; an API or token given beside it would be ignored.
        given = [
            f
            for f in ("api_url", "api_token", "api_token_file", "api_ca_file")
            if f in settings.model_fields_set
        ]
        if given:
            raise SettingsError([Problem(f, "cannot be used with --demo") for f in given])
        return
    problem = None
    if settings.api_token is not None and settings.api_token_file is not None:
        problem = Problem("api_token", "set either the token or the token file, not both")
    elif settings.api_token is None and settings.api_token_file is None:
        problem = Problem("api_token", "a token is required (or a token file, or --demo)")
    elif settings.api_token_file is not None:
        try:
            read_token_file(settings.api_token_file)
        except TokenFileError as error:
            problem = Problem("api_token_file", error.problem)
    if problem is not None:
        raise SettingsError([problem])


# The simulator's own variables (``evotic-simulator``) may share an environment with the exporter.
SIMULATOR_VARIABLES = "EVOTIC_SIMULATOR_"


def read_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings given in ``environ``, by field: each under its variable or an alias.

    Refuses ``EVOTIC_*`` variables that name no setting, so that a typo cannot pass unnoticed
    (``EVOTIC_WEB_CONFIG`` for ``EVOTIC_WEB_CONFIG_FILE`` would serve without TLS or auth), and
    a setting given under two names with different values.
    """
    names = {name: option for option in OPTIONS for name in (option.variable, *option.aliases)}
    values: dict[str, str] = {}
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(SIMULATOR_VARIABLES):
            continue
        option = names.get(name)
        if option is None:
            close = difflib.get_close_matches(upper, names, n=1, cutoff=0.6)
            hint = f"; did you mean {describe_setting(names[close[0]].field)}?" if close else ""
            problems.append(Problem(None, "unknown variable" + hint, variable=name))
            continue
        value = environ[name]
        if values.setdefault(option.field, value) != value:
            given = [n for n in (option.variable, *option.aliases) if n in environ]
            problems.append(Problem(option.field, f"set as {' and '.join(given)} with "
                                    f"different values; set {option.variable} only"))  # fmt: skip
    if problems:
        raise SettingsError(problems)
    return values


@dataclass(frozen=True)
class ExposedFile:
    """A file that other users may read (``others`` has "read") or change ("write")."""

    what: str
    path: Path
    mode: int
    others: tuple[str, ...]
    fix: str


def exposed_files(settings: Settings, key_file: Path | None) -> list[ExposedFile]:
    """The token file, the TLS key and the web configuration file (whose password hashes can be
    cracked offline) where other users may read or change them. Only the permission bits for
    "other" count: a group is often how the exporter's user is meant to read a file
    (Kubernetes' ``fsGroup``).
    """
    candidates = (
        ("token file", settings.api_token_file),
        ("web configuration file", settings.web_config_file),
        ("TLS key file", key_file),
    )
    found = []
    for what, path in candidates:
        if path is None:
            continue
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue  # read successfully a moment ago; whatever happened, reading will say
        others = tuple(
            word for word, bit in (("read", stat.S_IROTH), ("write", stat.S_IWOTH)) if mode & bit
        )
        if others:
            found.append(
                ExposedFile(what, path, mode, others, f"chmod o-rwx {shlex.quote(str(path))}")
            )
    return found


def read_quotas(settings: Settings) -> Quotas:
    """The traffic quotas: the default and the quota file, read once here."""
    try:
        return load_quotas(settings.traffic_quota_bytes, settings.traffic_quota_file)
    except QuotaError as error:
        raise file_problem("traffic_quota_file", error) from None


def file_problem(field: str, error: FileError) -> SettingsError:
    """The setting that names a file, with the file's one-line mistake."""
    # A mistake at a key names the file here; one about the whole file names it already.
    where = f"{error.path}: " if error.path is not None and error.key is not None else ""
    return SettingsError([Problem(field, f"{where}{error}")])


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6, ``:port`` for every IPv4 interface).

    Each way the address can be wrong raises a ``ValueError`` of its own, one line that says
    what to write instead; the settings report it as the listen address's problem.
    """
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket:
            raise ValueError(f"{address!r} has no ']' to close the IPv6 address")
        if not _is_ipv6(host):
            raise ValueError(f"brackets are for IPv6 addresses only, not {host!r}")
        if not rest:
            raise ValueError(f"no port: expected host:port, as in [{host}]:{DEFAULT_PORT}")
        if not rest.startswith(":"):
            raise ValueError(f"expected a colon and a port after [{host}], got {rest!r}")
        return host, _port(rest[1:])
    host, colon, port_text = address.rpartition(":")
    if not colon:
        raise ValueError(
            f"no port: expected host:port, as in {address or '0.0.0.0'}:{DEFAULT_PORT}"
        )
    if ":" in host:
        if _is_ipv6(host):
            raise ValueError(f"IPv6 addresses need brackets: [{host}]:{port_text}")
        if _is_ipv6(address):
            raise ValueError(f"IPv6 addresses need brackets and a port: [{address}]:{DEFAULT_PORT}")
        raise ValueError(f"the host {host!r} has a stray colon")
    return host or "0.0.0.0", _port(port_text)


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _port(text: str) -> int:
    if not text:
        raise ValueError("no port after the colon")
    if not re.fullmatch(r"-?[0-9]+", text):
        raise ValueError(f"port {text!r} is not a number")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return port


def format_address(host: str, port: int) -> str:
    """``host:port`` as a user would write it again: ``[::1]:19875`` for an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


OPTIONS: tuple[Option, ...] = (
    Option("api_url", "--api.url", "Evotic API base URL"),
    Option("api_token", "--api.token", "API bearer token (prefer --api.token-file)"),
    Option("api_token_file", "--api.token-file", "file holding the token, re-read every poll"),
    Option("api_timeout", "--api.timeout", "seconds per HTTP request"),
    Option("api_ca_file", "--api.ca-file",
           "PEM file of CA certificates trusted for the API, besides the public ones"),
    Option("poll_interval", "--poll.interval", "seconds between polls (at least 1)"),
    Option("stale_after", "--poll.stale-after",
           "seconds after the last good poll until server series are dropped and evotic_up is 0 "
           "(at least twice --poll.interval)", aliases=("EVOTIC_STALE_AFTER",)),
    Option("collect_status", "--collector.status", "also call the per-server status endpoint",
           boolean=True, aliases=("EVOTIC_COLLECT_STATUS",)),
    Option("status_concurrency", "--collector.status.concurrency",
           "status calls in flight at once", aliases=("EVOTIC_STATUS_CONCURRENCY",)),
    Option("status_interval", "--collector.status.interval", "seconds between status sweeps",
           aliases=("EVOTIC_STATUS_INTERVAL",)),
    Option("listen_address", "--web.listen-address", "host:port to serve on",
           aliases=("EVOTIC_LISTEN_ADDRESS",)),
    Option("web_config_file", "--web.config.file", "TLS and basic-auth configuration file"),
    Option("web_enable_lifecycle", "--web.enable-lifecycle",
           "accept POST /-/reload (and reload on it as on SIGHUP)", boolean=True),
    Option("config_file", "--config.file",
           "YAML file of several accounts, each scraped at /probe?target=NAME"),
    Option("traffic_quota_bytes", "--traffic.quota-bytes",
           "traffic included per billing period and direction (bytes, or 20TiB, 5TB)"),
    Option("traffic_quota_file", "--traffic.quota-file", "YAML file of per-server quotas"),
    Option("traffic_period_start_day", "--traffic.period-start-day",
           "day of the month (UTC) a billing period starts"),
    Option("log_level", "--log.level", "debug, info, warning or error"),
    Option("log_format", "--log.format", "auto, console or json"),
    Option("demo", "--demo", "run against the built-in simulator; no token needed",
           boolean=True),
)  # fmt: skip

_BY_FIELD = {option.field: option for option in OPTIONS}


def settings_table() -> str:
    """The README's settings table, generated here so that it cannot drift from the code."""
    rows = [
        "| environment | also accepted | flag | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for option in OPTIONS:
        default = default_text(option)
        shown = "—" if default is None else f"`{default}`"
        aliases = ", ".join(f"`{alias}`" for alias in option.aliases)
        rows.append(f"| `{option.variable}` | {aliases} | `{option.flag}` | {shown} "
                    f"| {option.help} |")  # fmt: skip
    return "\n".join(rows) + "\n"


def default_text(option: Option) -> str | None:
    """The setting's default as it would be written on the command line; ``None``: no default."""
    default = Settings.model_fields[option.field].default
    if default is None:
        return None
    return str(default).lower() if option.boolean else str(default)


def describe_setting(field: str) -> str:
    """``EVOTIC_POLL_INTERVAL (--poll.interval)`` for a field name."""
    option = _BY_FIELD.get(field)
    return f"{option.variable} ({option.flag})" if option else field


def validation_problems(error: ValidationError) -> list[Problem]:
    """The problems of a failed ``Settings(...)``, each naming its field, never its value."""
    problems = []
    for detail in error.errors(include_input=False, include_url=False):
        # A validator's own ValueError is in the context, its text unprefixed.
        raised = detail.get("ctx", {}).get("error")
        message = str(raised) if isinstance(raised, ValueError) else detail["msg"]
        problems.append(Problem(str(detail["loc"][0]) if detail["loc"] else None, message))
    return problems
