"""The accounts an exporter serves, by name: started, kept across reloads, stopped.

A reload hands ``apply`` the accounts as now configured. An account that is new starts polling;
one that is gone stops, and with it its series and its metrics; one whose settings changed is
replaced; one whose settings are the same keeps its poller and its last snapshot, and takes the
quotas as read again. Readers take ``current``, a mapping replaced whole, never changed in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from exporter.service.account import Account
from exporter.settings.accounts import AccountConfig

# Builds and starts one account; what it starts beside it (a demo simulator) goes on the stack.
StartAccount = Callable[[AccountConfig, contextlib.AsyncExitStack], Awaitable[Account]]


@dataclass(frozen=True)
class Changes:
    """What a reload did, by account name."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Running:
    config: AccountConfig
    account: Account
    stack: contextlib.AsyncExitStack


class Roster:
    """The running accounts; ``current`` maps their names to them, in the configured order."""

    def __init__(self, start: StartAccount) -> None:
        self._start = start
        self._running: dict[str, _Running] = {}
        self.current: Mapping[str, Account] = MappingProxyType({})

    async def apply(self, configs: Mapping[str, AccountConfig]) -> Changes:
        removed = tuple(name for name in self._running if name not in configs)
        replaced = tuple(name for name, config in configs.items()
                         if name in self._running
                         and self._running[name].config.settings != config.settings)  # fmt: skip
        kept = tuple(name for name in configs if name in self._running and name not in replaced)
        added = tuple(name for name in configs if name not in self._running)
        for name in (*removed, *replaced):
            await self._running.pop(name).stack.aclose()
        running = {}
        for name, config in configs.items():
            if name in kept:
                old = self._running[name]
                old.account.use_quotas(config.quotas)
                running[name] = _Running(config, old.account, old.stack)
            else:
                running[name] = await self._launch(config)
        self._running = running
        self.current = MappingProxyType({name: r.account for name, r in running.items()})
        return Changes(added, removed, replaced, kept)

    async def _launch(self, config: AccountConfig) -> _Running:
        stack = contextlib.AsyncExitStack()
        account = await self._start(config, stack)
        stack.push_async_callback(account.stop)
        account.start()
        return _Running(config, account, stack)

    async def stop(self) -> None:
        running, self._running = self._running, {}
        self.current = MappingProxyType({})
        for entry in reversed(running.values()):
            await entry.stack.aclose()
