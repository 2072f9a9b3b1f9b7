"""The exporter as one object: its accounts, its web server and its reloads, started, reloaded
and stopped by methods that ``cli.main`` calls.

``start`` starts every account and then the server; ``reload`` reads every file again and applies
all of it or nothing (SIGHUP and ``POST /-/reload`` both come here); ``stop`` ends what ``start``
began, in reverse order. ``run`` does all three around the signals a daemon is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import replace

import structlog

from exporter import __version__
from exporter.api.ratelimit import RateBudgets
from exporter.exposition.own_metrics import AccountMetrics, ReloadMetrics, process_registry
from exporter.polling.poller import PollSettings
from exporter.runtime.logs import Redactor, configure_logging
from exporter.runtime.worker import SnapshotWorker
from exporter.service.account import Account
from exporter.service.connect import connect, with_demo_quota
from exporter.service.reload import Files, LoadFailed, Reloader, read_files
from exporter.service.roster import Roster
from exporter.settings.accounts import DEFAULT_ACCOUNT, AccountConfig
from exporter.settings.model import (
    Problem,
    Settings,
    SettingsError,
    exposed_files,
    format_address,
    parse_listen_address,
)
from exporter.web.app import ExporterApp
from exporter.web.certificates import Certificates, log_reloads
from exporter.web.config import WebConfig, WebConfigError
from exporter.web.server import AsgiServer, bind_socket


class CannotListen(Exception):
    """The listen address cannot be bound; logged already."""


class Service:
    """Everything one exporter process runs, built from its settings and the files they name."""

    def __init__(
        self, settings: Settings, files: Files, environ: Mapping[str, str] = os.environ
    ) -> None:
        self._settings = settings
        self._environ = environ
        self._multi = settings.config_file is not None
        self._redactor = Redactor()
        configure_logging(settings.log_level, settings.log_format, self._redactor)
        self._log = structlog.get_logger("exporter")
        self._warn_exposed(files)
        self._files = self._with_demo_quota(files)
        self._budgets = RateBudgets()
        # Every account's validating and rendering, one piece at a time (see runtime/worker.py).
        self._worker = SnapshotWorker()
        self._roster = Roster(self._start_account)
        self._process = process_registry(__version__)
        self._reloads = ReloadMetrics(self._process, time.time)
        self._log_certificates = log_reloads(self._log)
        self._certificates = Certificates(files.web, on_reload=self._certificates_reloaded)
        self._reloader = Reloader(self._read, self._roster, self._use_web, self._reloads)
        self.app = ExporterApp(
            lambda: self._roster.current, self._process, version=__version__, multi=self._multi,
            extra_headers=files.web.headers, auth=files.web.auth,
            reload=self._reloader.reload if settings.web_enable_lifecycle else None,
        )  # fmt: skip
        self._started = contextlib.AsyncExitStack()
        self.port: int | None = None

    def _warn_exposed(self, files: Files) -> None:
        warned = set()
        for account in files.accounts.values():
            for exposed in exposed_files(account.settings, files.web.key_file):
                if exposed.path not in warned:
                    warned.add(exposed.path)
                    self._log.warning("file open to other users", file=exposed.what,
                                      path=str(exposed.path), mode=f"{exposed.mode:04o}",
                                      others=" and ".join(exposed.others),
                                      fix=exposed.fix)  # fmt: skip

    def _with_demo_quota(self, files: Files) -> Files:
        if not self._settings.demo:
            return files
        return replace(files, accounts=with_demo_quota(files.accounts))

    async def start(self) -> None:
        """Start every account, then serve; ``CannotListen`` when the address is taken."""
        started = self._started
        started.callback(self._worker.close)
        started.push_async_callback(self._roster.stop)
        await self._roster.apply(self._files.accounts)
        self._reloads.loaded(True)
        host, port = parse_listen_address(self._settings.listen_address)
        try:
            sock = bind_socket(host, port)
        except OSError as error:
            self._log.error("cannot listen", address=format_address(host, port),
                            error=error.strerror)  # fmt: skip
            raise CannotListen from None
        server = AsgiServer(self.app, sock, ssl_context=self._certificates.context)
        await server.start()
        started.push_async_callback(server.stop)
        self._certificates.start()
        started.push_async_callback(self._certificates.stop)
        self.port = server.port
        apis = {name: account.api_url for name, account in self._roster.current.items()}
        where = {"accounts": apis} if self._multi else {"api": apis[DEFAULT_ACCOUNT]}
        web = self._files.web
        self._log.info("listening", address=format_address(host, server.port), **where,
                       demo=self._settings.demo, version=__version__, tls=web.tls,
                       client_auth=web.client_auth, basic_auth=web.auth is not None)  # fmt: skip

    async def reload(self) -> str | None:
        """Read every file again and apply it; ``None`` when done, else the one-line problem."""
        return await self._reloader.reload()

    async def stop(self) -> None:
        """Stop what ``start`` started, in reverse order."""
        await self._started.aclose()

    async def run(self) -> int:
        """Start, reload on SIGHUP, stop on SIGTERM or SIGINT; the exit code (1: cannot listen)."""
        try:
            await self.start()
        except CannotListen:
            await self.stop()
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        reloading: set[asyncio.Task[str | None]] = set()

        def on_hangup() -> None:
            task = asyncio.create_task(self.reload())
            reloading.add(task)
            task.add_done_callback(reloading.discard)

        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
            await stop.wait()
            self._log.info("shutting down")
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            await self.stop()
        return 0

    # ------------------------------------------------------------------ what the parts call

    async def _start_account(
        self, config: AccountConfig, stack: contextlib.AsyncExitStack
    ) -> Account:
        """One account's client, token and poller; in the demo, the simulator it polls."""
        log = self._log.bind(account=config.name) if self._multi else None
        metrics = AccountMetrics()
        connection = await connect(config, stack, self._redactor, multi=self._multi,
                                   observe=metrics.request, budgets=self._budgets,
                                   offload=self._worker)  # fmt: skip
        if config.route.proxy is not None:
            (log or self._log).info("reaching the API through a proxy",
                                    proxy=config.route.proxy.origin,
                                    variable=config.route.proxy.variable)  # fmt: skip
        return Account(connection.client, connection.token,
                       PollSettings.from_settings(config.settings), metrics,
                       quotas=config.quotas, logger=log, offload=self._worker)  # fmt: skip

    def _certificates_reloaded(self, ok: bool, problem: str | None) -> None:
        # Renewed certificate files are a reload of their own, counted as one.
        self._log_certificates(ok, problem)
        self._reloads.loaded(ok)

    def _read(self) -> Files:
        return self._with_demo_quota(read_files(self._settings, self._environ))

    async def _use_web(self, web: WebConfig) -> None:
        try:
            self._certificates.apply(web)
        except WebConfigError as error:  # TLS turned on or off
            problem = SettingsError([Problem("web_config_file", str(error))])
            raise LoadFailed(str(problem)) from None
        self.app.set_access(extra_headers=web.headers, auth=web.auth)
