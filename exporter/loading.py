"""What every command reads first: flags over variables into ``Settings``, then the accounts
and the files they name (configuration, quotas, web configuration), each file read once.

The daemon (``cli.py``), ``check`` and the asset commands all start here, so a mistake gets the
same one line, and exit code 2, whichever command meets it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pydantic import ValidationError

from exporter import __version__
from exporter.accounts_file import AccountConfig, read_accounts
from exporter.api.network import ProxySettingError
from exporter.config import (
    OPTIONS,
    Settings,
    SettingsError,
    check_sources,
    default_text,
    file_problem,
    read_environment,
    validation_problems,
)
from exporter.reloading import Files, LoadFailed
from exporter.webconfig import WebConfig, WebConfigError, load_web_config

PROG = "evotic-exporter"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage first; one line is easier to act on.
        self.exit(2, f"{PROG}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Prometheus exporter for servers hosted at Evotic.",
                     argument_default=argparse.SUPPRESS,
                     epilog=f"Commands: {PROG} check [--output json] [settings]: one listing call "
                     "per account, and what it says; dashboards --output DIR, rules --output DIR "
                     "[--force]: write the Grafana dashboards or Prometheus rules that ship with "
                     "the exporter. Each takes --help.")  # fmt: skip
    for option in OPTIONS:
        env = ", also ".join((option.variable, *option.aliases))
        default = default_text(option)
        # argparse formats help texts with %; the defaults come from Settings, not argparse.
        shown = f"{option.help} [{env}; default: {default or 'none'}]".replace("%", "%%")
        if option.boolean:
            parser.add_argument(option.flag, dest=option.field, action="store_true", help=shown)
        else:
            parser.add_argument(option.flag, dest=option.field, metavar="VALUE", help=shown)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


@dataclass(frozen=True)
class Loaded:
    """The settings and the accounts they configure, each file read once."""

    settings: Settings
    accounts: Mapping[str, AccountConfig]


def load(argv: Sequence[str] | None, environ: Mapping[str, str] = os.environ) -> Loaded:
    """Settings from flags over the environment, the checks that span fields, and the accounts:
    the configuration file, the quota files, the CA file and the proxy variables."""
    flags: dict[str, Any] = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {**read_environment(environ), **flags}
    try:
        settings = Settings(**values)
    except ValidationError as error:
        raise SettingsError(validation_problems(error)) from None
    check_sources(settings)
    return Loaded(settings, read_accounts(settings, environ))


def load_settings(argv: Sequence[str] | None) -> Settings:
    return load(argv).settings


def load_web(settings: Settings) -> WebConfig:
    """The checked web configuration (TLS, basic auth, headers); plain HTTP without a file."""
    if settings.web_config_file is None:
        return WebConfig()
    try:
        return load_web_config(settings.web_config_file)
    except WebConfigError as error:
        raise file_problem("web_config_file", error) from None


def read_files(settings: Settings, environ: Mapping[str, str]) -> Files:
    """Every file again, for a reload; ``LoadFailed`` with the one-line problem."""
    try:
        return Files(read_accounts(settings, environ), load_web(settings))
    except (SettingsError, ProxySettingError) as error:
        raise LoadFailed(str(error)) from None
