"""What every command reads first: flags over variables into ``Settings``, then the accounts
and the files they name (configuration, quotas), each file read once.

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
from exporter.settings.accounts import AccountConfig, read_accounts
from exporter.settings.model import (
    OPTIONS,
    Settings,
    SettingsError,
    check_sources,
    default_text,
    read_environment,
    validation_problems,
)

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
