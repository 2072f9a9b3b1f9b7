"""The ``evotic-exporter`` command: read settings, wire the parts together, serve until told.

Exit codes: 0 after SIGTERM/SIGINT, 2 for invalid settings (one line on stderr, no traceback),
1 when the listen address cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
from pydantic import ValidationError

from exporter import __version__
from exporter.account import Account
from exporter.api.client import EvoticClient
from exporter.api.network import (
    ApiRoute,
    CaFileError,
    ProxySettingError,
    environment_proxy,
    tls_context,
)
from exporter.api.token import TokenSource
from exporter.certificates import Certificates, log_reloads
from exporter.config import (
    OPTIONS,
    Problem,
    Settings,
    SettingsError,
    check_sources,
    default_text,
    describe_setting,
    exposed_files,
    format_address,
    parse_listen_address,
    read_environment,
    read_quotas,
    validation_problems,
)
from exporter.logging import Redactor, configure_logging
from exporter.own_metrics import AccountMetrics, process_registry
from exporter.poller import PollSettings
from exporter.quota import Quotas, load_quotas
from exporter.server import ExporterApp
from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from exporter.webserver import AsgiServer, bind_socket

PROG = "evotic-exporter"
DEMO_CHURN_INTERVAL = 300.0
DEMO_QUOTA_BYTES = 5.0 * 2**40


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage first; one line is easier to act on.
        self.exit(2, f"{PROG}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Prometheus exporter for servers hosted at Evotic.",
                     argument_default=argparse.SUPPRESS)  # fmt: skip
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
    """The settings and what their files say, each file read once."""

    settings: Settings
    quotas: Quotas
    route: ApiRoute


def load(argv: Sequence[str] | None) -> Loaded:
    """Settings from flags over the environment, the checks that span fields, the quota file,
    the CA file and the proxy variables."""
    flags: dict[str, Any] = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {**read_environment(os.environ), **flags}
    try:
        settings = Settings(**values)
    except ValidationError as error:
        raise SettingsError(validation_problems(error)) from None
    check_sources(settings)
    return Loaded(settings, read_quotas(settings), load_route(settings, os.environ))


def load_route(settings: Settings, environ: Mapping[str, str]) -> ApiRoute:
    """Whom the client trusts (``--api.ca-file``) and the proxy the standard variables name.

    Raises ``SettingsError`` for an unusable CA file, ``ProxySettingError`` for a proxy
    variable the client cannot honour.
    """
    try:
        tls = tls_context(settings.api_ca_file)
    except CaFileError as error:
        raise SettingsError([Problem("api_ca_file", error.problem)]) from None
    if settings.demo:
        return ApiRoute(tls)  # the simulator is on this host, over plain HTTP
    return ApiRoute(tls, environment_proxy(settings.api_url, environ))


def load_settings(argv: Sequence[str] | None) -> Settings:
    return load(argv).settings


def load_web(settings: Settings) -> WebConfig:
    """The checked web configuration (TLS, basic auth, headers); plain HTTP without a file."""
    if settings.web_config_file is None:
        return WebConfig()
    try:
        return load_web_config(settings.web_config_file)
    except WebConfigError as error:
        raise SettingsError([Problem("web_config_file", str(error))]) from None


# mallopt(3) parameter numbers in glibc's malloc.h.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> None:
    """Have glibc hand large freed blocks back to the system at once, every time.

    glibc serves blocks above its mmap threshold (128 KiB) with mmap and unmaps them when
    freed, but it raises the threshold to the size of each such block freed, up to 32 MiB.
    From the second poll on, the multi-megabyte bodies and pages of every poll then come
    from the heap, which keeps them after use: tens of megabytes at 10,000 servers (see
    benchmarks/README.md). Setting the threshold turns that adjustment off. Two arenas
    instead of eight per core: the worker threads that validate and render take turns
    holding the GIL anyway, and each arena of their own kept its own free memory. Other C
    libraries have no mallopt, and nothing changes there.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    mallopt(_M_ARENA_MAX, 2)


def main(argv: Sequence[str] | None = None) -> int:
    tune_allocator()
    try:
        loaded = load(argv)
        web = load_web(loaded.settings)
    except (SettingsError, ProxySettingError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    return asyncio.run(run(loaded.settings, loaded.quotas, web, loaded.route))


async def run(settings: Settings, quotas: Quotas, web: WebConfig, route: ApiRoute) -> int:
    redactor = Redactor()
    configure_logging(settings.log_level, settings.log_format, redactor)
    log = structlog.get_logger("exporter")
    for exposed in exposed_files(settings, web.key_file):
        log.warning("file open to other users", file=exposed.what, path=str(exposed.path),
                    mode=f"{exposed.mode:04o}", others=" and ".join(exposed.others),
                    fix=exposed.fix)  # fmt: skip
    # Whatever was started is stopped again, in reverse order, however run() ends.
    async with contextlib.AsyncExitStack() as started:
        api_url = settings.api_url
        if settings.demo:
            from simulator import SimulatorOptions, start_simulator

            if settings.traffic_quota_bytes is None and settings.traffic_quota_file is None:
                # So that the quota panels and alerts have something to show.
                quotas = load_quotas(DEMO_QUOTA_BYTES, None)
            options = SimulatorOptions(churn_interval=DEMO_CHURN_INTERVAL)
            demo_api = await start_simulator(options)
            started.push_async_callback(demo_api.stop)
            api_url = demo_api.url
            token = TokenSource(redactor, token=demo_api.token, origin="the simulator")
        elif settings.api_token is not None:
            token = TokenSource(redactor, token=settings.api_token.get_secret_value(),
                                origin=describe_setting("api_token"))  # fmt: skip
        else:
            token = TokenSource(redactor, path=settings.api_token_file)

        metrics = AccountMetrics()
        client = EvoticClient(
            api_url, token, timeout=settings.api_timeout,
            user_agent=f"{PROG}/{__version__}", observe=metrics.request,
            auth_origin=token.origin, route=route,
        )  # fmt: skip
        if route.proxy is not None:
            log.info("reaching the API through a proxy", proxy=route.proxy.origin,
                     variable=route.proxy.variable)  # fmt: skip
        account = Account(client, token, PollSettings.from_settings(settings), metrics,
                          quotas=quotas)  # fmt: skip
        started.push_async_callback(account.stop)  # also closes the client
        app = ExporterApp(account, process_registry(__version__), version=__version__,
                          extra_headers=web.headers, auth=web.auth)  # fmt: skip

        host, port = parse_listen_address(settings.listen_address)
        try:
            sock = bind_socket(host, port)
        except OSError as error:
            log.error("cannot listen", address=format_address(host, port), error=error.strerror)
            return 1
        certificates = Certificates(web, on_reload=log_reloads(log))
        server = AsgiServer(app, sock, ssl_context=certificates.context)
        await server.start()
        started.push_async_callback(server.stop)
        certificates.start()
        started.push_async_callback(certificates.stop)
        account.start()
        log.info("listening", address=format_address(host, server.port), api=api_url,
                 demo=settings.demo, version=__version__, tls=web.tls, client_auth=web.client_auth,
                 basic_auth=web.auth is not None)  # fmt: skip

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
            started.callback(loop.remove_signal_handler, signum)
        await stop.wait()
        log.info("shutting down")
    return 0
