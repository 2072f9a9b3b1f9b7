"""An account's API client: where the API and the token come from (its settings, or with
``--demo`` a simulated API of its own) and the client that reaches it. The daemon and
``evotic-exporter check`` connect the same way, through ``connect``."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace

from exporter import __version__
from exporter.api.client import EvoticClient, RequestObserver
from exporter.api.ratelimit import RateBudgets
from exporter.api.token import TokenSource
from exporter.runtime.logs import Redactor
from exporter.runtime.worker import Offload
from exporter.settings.accounts import AccountConfig
from exporter.settings.loading import PROG
from exporter.settings.model import describe_setting
from exporter.settings.quotas import load_quotas

DEMO_CHURN_INTERVAL = 300.0
DEMO_QUOTA_BYTES = 5.0 * 2**40


@dataclass(frozen=True)
class Source:
    """The account's API, its token, and the key of its rate budget: accounts that name the
    same token file share one."""

    api_url: str
    token: TokenSource
    budget_key: str


async def _open_source(
    config: AccountConfig, stack: contextlib.AsyncExitStack, redactor: Redactor, *, multi: bool
) -> Source:
    """The account's source; a demo simulator it starts is stopped by ``stack``."""
    settings = config.settings
    if settings.demo:
        from simulator import SimulatorOptions, start_simulator

        # Without a configuration file the demo is the one it always was; with one, each
        # account is a fleet of its own, with a token of its own.
        options = SimulatorOptions(churn_interval=DEMO_CHURN_INTERVAL)
        if multi:
            seed = zlib.crc32(config.name.encode()) % 100_000
            options = replace(options, seed=seed, token=secrets.token_urlsafe(24))
        demo_api = await start_simulator(options)
        stack.push_async_callback(demo_api.stop)
        token = TokenSource(redactor, token=demo_api.token, origin="the simulator")
        return Source(demo_api.url, token, f"demo {config.name}")
    if settings.api_token is not None:
        token = TokenSource(redactor, token=settings.api_token.get_secret_value(),
                            origin=describe_setting("api_token"))  # fmt: skip
        return Source(settings.api_url, token, "api_token")
    path = settings.api_token_file
    token = TokenSource(redactor, path=path)
    return Source(settings.api_url, token, str(path and path.resolve()))


@dataclass(frozen=True)
class Connection:
    """An account's client and the token source it sends."""

    client: EvoticClient
    token: TokenSource


async def connect(
    config: AccountConfig,
    stack: contextlib.AsyncExitStack,
    redactor: Redactor,
    *,
    multi: bool,
    observe: RequestObserver,
    budgets: RateBudgets | None = None,
    offload: Offload = asyncio.to_thread,
    one_call: bool = False,
) -> Connection:
    """The account's client; ``stack`` closes it and stops a demo simulator it polls.

    ``budgets`` shares a rate budget between the accounts that send the same token; ``one_call``
    (``check``) says the token file is read once, as there is no next poll to read it again.
    """
    settings = config.settings
    source = await _open_source(config, stack, redactor, multi=multi)
    token = source.token
    path = settings.api_token_file
    origin = f"the token file {path}" if one_call and path is not None else token.origin
    client = EvoticClient(
        source.api_url, token, timeout=settings.api_timeout,
        user_agent=f"{PROG}/{__version__}", observe=observe, auth_origin=origin,
        route=config.route, offload=offload,
        budget=None if budgets is None else budgets.for_token(source.budget_key),
    )  # fmt: skip
    stack.push_async_callback(client.aclose)
    return Connection(client, token)


def with_demo_quota(accounts: Mapping[str, AccountConfig]) -> dict[str, AccountConfig]:
    """In the demo, an account given no quota gets one, so that the quota panels and alerts
    have something to show."""
    return {
        name: config
        if config.settings.traffic_quota_bytes is not None
        or config.settings.traffic_quota_file is not None
        else replace(config, quotas=load_quotas(DEMO_QUOTA_BYTES, None))
        for name, config in accounts.items()
    }
