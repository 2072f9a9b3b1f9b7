"""The ``evotic-exporter`` command: read settings, wire the parts together, serve until told.

Exit codes: 0 after SIGTERM/SIGINT, 2 for invalid settings (one line on stderr, no traceback),
1 when the listen address cannot be bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

import structlog

from exporter import __version__
from exporter.account import Account
from exporter.accounts import Accounts
from exporter.accounts_file import DEFAULT_ACCOUNT, AccountConfig
from exporter.api.client import EvoticClient
from exporter.api.network import ProxySettingError
from exporter.api.ratelimit import RateBudgets
from exporter.certificates import Certificates, log_reloads
from exporter.config import (
    Problem,
    Settings,
    SettingsError,
    exposed_files,
    format_address,
    parse_listen_address,
)
from exporter.loading import PROG, load, load_web, read_files
from exporter.logging import Redactor, configure_logging
from exporter.offload import Offload, SnapshotWorker
from exporter.own_metrics import AccountMetrics, ReloadMetrics, process_registry
from exporter.poller import PollSettings
from exporter.reloading import Files, LoadFailed, Reloader
from exporter.server import ExporterApp
from exporter.sources import open_source, with_demo_quota
from exporter.webconfig import WebConfig, WebConfigError
from exporter.webserver import AsgiServer, bind_socket

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


# The first word of the command line that runs a command instead of the exporter.
COMMANDS = ("check", "dashboards", "rules")


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in COMMANDS:
        from exporter import bundled, check  # the daemon has no need of them

        return check.main(words[1:]) if words[0] == "check" else bundled.main(words[0], words[1:])
    tune_allocator()
    try:
        loaded = load(argv)
        web = load_web(loaded.settings)
    except (SettingsError, ProxySettingError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    return asyncio.run(run(loaded.settings, Files(loaded.accounts, web)))


def _with_demo_quota(files: Files) -> Files:
    return replace(files, accounts=with_demo_quota(files.accounts))


async def run(settings: Settings, files: Files, environ: Mapping[str, str] = os.environ) -> int:
    redactor = Redactor()
    configure_logging(settings.log_level, settings.log_format, redactor)
    log = structlog.get_logger("exporter")
    multi = settings.config_file is not None
    key_file = files.web.key_file
    warned = set()
    for account in files.accounts.values():
        for exposed in exposed_files(account.settings, key_file):
            if exposed.path not in warned:
                warned.add(exposed.path)
                log.warning("file open to other users", file=exposed.what,
                            path=str(exposed.path), mode=f"{exposed.mode:04o}",
                            others=" and ".join(exposed.others), fix=exposed.fix)  # fmt: skip
    if settings.demo:
        files = _with_demo_quota(files)

    budgets = RateBudgets()
    # Every account's validating and rendering, one piece at a time (see offload.py).
    worker = SnapshotWorker()

    async def start_account(config: AccountConfig, stack: contextlib.AsyncExitStack) -> Account:
        account_log = log.bind(account=config.name) if multi else None
        return await _start_account(config, stack, redactor, budgets, account_log, multi=multi,
                                    offload=worker)  # fmt: skip

    # Whatever was started is stopped again, in reverse order, however run() ends.
    async with contextlib.AsyncExitStack() as started:
        started.callback(worker.close)
        accounts = Accounts(start_account)
        started.push_async_callback(accounts.stop)
        await accounts.apply(files.accounts)
        process = process_registry(__version__)
        reloads = ReloadMetrics(process, time.time)
        reloads.loaded(True)
        log_certificates = log_reloads(log)

        def certificates_reloaded(ok: bool, problem: str | None) -> None:
            # Renewed certificate files are a reload of their own, counted as one.
            log_certificates(ok, problem)
            reloads.loaded(ok)

        certificates = Certificates(files.web, on_reload=certificates_reloaded)

        def read() -> Files:
            fresh = read_files(settings, environ)
            return _with_demo_quota(fresh) if settings.demo else fresh

        async def use_web(web: WebConfig) -> None:
            try:
                certificates.apply(web)
            except WebConfigError as error:  # TLS turned on or off
                problem = SettingsError([Problem("web_config_file", str(error))])
                raise LoadFailed(str(problem)) from None
            app.set_access(extra_headers=web.headers, auth=web.auth)

        reloader = Reloader(read, accounts, use_web, reloads)
        lifecycle = reloader.reload if settings.web_enable_lifecycle else None
        app = ExporterApp(lambda: accounts.current, process, version=__version__, multi=multi,
                          extra_headers=files.web.headers, auth=files.web.auth,
                          reload=lifecycle)  # fmt: skip

        host, port = parse_listen_address(settings.listen_address)
        try:
            sock = bind_socket(host, port)
        except OSError as error:
            log.error("cannot listen", address=format_address(host, port), error=error.strerror)
            return 1
        server = AsgiServer(app, sock, ssl_context=certificates.context)
        await server.start()
        started.push_async_callback(server.stop)
        certificates.start()
        started.push_async_callback(certificates.stop)
        apis = {name: account.api_url for name, account in accounts.current.items()}
        where = {"accounts": apis} if multi else {"api": apis[DEFAULT_ACCOUNT]}
        log.info("listening", address=format_address(host, server.port), **where,
                 demo=settings.demo, version=__version__, tls=files.web.tls,
                 client_auth=files.web.client_auth,
                 basic_auth=files.web.auth is not None)  # fmt: skip

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
            started.callback(loop.remove_signal_handler, signum)
        reloading: set[asyncio.Task[str | None]] = set()

        def on_hangup() -> None:
            task = asyncio.create_task(reloader.reload())
            reloading.add(task)
            task.add_done_callback(reloading.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        started.callback(loop.remove_signal_handler, signal.SIGHUP)
        await stop.wait()
        log.info("shutting down")
    return 0


async def _start_account(
    config: AccountConfig,
    stack: contextlib.AsyncExitStack,
    redactor: Redactor,
    budgets: RateBudgets,
    log: structlog.typing.FilteringBoundLogger | None,
    *,
    multi: bool,
    offload: Offload,
) -> Account:
    """One account's client, token and poller; in the demo, the simulator it polls."""
    settings = config.settings
    source = await open_source(config, stack, redactor, multi=multi)
    token = source.token
    metrics = AccountMetrics()
    client = EvoticClient(
        source.api_url, token, timeout=settings.api_timeout,
        user_agent=f"{PROG}/{__version__}", observe=metrics.request,
        auth_origin=token.origin, route=config.route,
        budget=budgets.for_token(source.budget_key), offload=offload,
    )  # fmt: skip
    if config.route.proxy is not None:
        (log or structlog.get_logger("exporter")).info(
            "reaching the API through a proxy", proxy=config.route.proxy.origin,
            variable=config.route.proxy.variable,
        )  # fmt: skip
    return Account(client, token, PollSettings.from_settings(settings), metrics,
                   quotas=config.quotas, logger=log, offload=offload)  # fmt: skip
