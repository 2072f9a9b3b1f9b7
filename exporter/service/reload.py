"""A reload: read every file again and apply the result whole, or nothing of it.

SIGHUP and ``POST /-/reload`` (with ``--web.enable-lifecycle``) both come here. A file that
cannot be used leaves everything as it was: one log line says why, and
``evotic_config_last_reload_successful`` is 0 until a load succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from exporter.api.network import ProxySettingError
from exporter.exposition.own_metrics import ReloadMetrics
from exporter.service.roster import Roster
from exporter.settings.accounts import AccountConfig, read_accounts
from exporter.settings.model import Settings, SettingsError
from exporter.web.config import WebConfig, load_web


@dataclass(frozen=True)
class Files:
    """What the files say: the accounts (configuration, quota and token files) and the web
    configuration."""

    accounts: Mapping[str, AccountConfig]
    web: WebConfig


class LoadFailed(Exception):
    """Files that cannot be used; ``str()`` is one line without secrets."""


def read_files(settings: Settings, environ: Mapping[str, str]) -> Files:
    """Every file again, for a reload; ``LoadFailed`` with the one-line problem."""
    try:
        return Files(read_accounts(settings, environ), load_web(settings))
    except (SettingsError, ProxySettingError) as error:
        raise LoadFailed(str(error)) from None


class Reloader:
    """Applies ``read()`` (which raises ``LoadFailed``) to the accounts and ``use_web``."""

    def __init__(
        self,
        read: Callable[[], Files],
        accounts: Roster,
        use_web: Callable[[WebConfig], Awaitable[None]],
        metrics: ReloadMetrics,
        *,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._read = read
        self._accounts = accounts
        self._use_web = use_web
        self._metrics = metrics
        self._log = logger or structlog.get_logger("exporter.reload")
        self._lock = asyncio.Lock()

    async def reload(self) -> str | None:
        """Read and apply the files; ``None`` when done, else the problem (nothing applied)."""
        async with self._lock:
            try:
                files = await asyncio.to_thread(self._read)
                await self._use_web(files.web)
            except LoadFailed as error:
                self._metrics.loaded(False)
                self._log.error("reload failed, the configuration before it stays",
                                problem=str(error))  # fmt: skip
                return str(error)
            changes = await self._accounts.apply(files.accounts)
            # After a fixed token or quota file, the data should not wait for the interval.
            for account in self._accounts.current.values():
                account.poll_now()
            self._metrics.loaded(True)
            self._log.info("reloaded", added=",".join(changes.added),
                           removed=",".join(changes.removed), replaced=",".join(changes.replaced),
                           kept=",".join(changes.kept))  # fmt: skip
            return None
