"""Start the simulator on a real socket inside the caller's event loop, and stop it again.

Hypercorn serves it through its public ``serve()``, given a shutdown trigger so that it installs
no signal handlers of its own: the caller's loop owns the process's signals.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from types import TracebackType

import hypercorn.asyncio
import hypercorn.config

from simulator.app import SimulatorApp
from simulator.control import CONTROL_PREFIX
from simulator.faults import FaultSet
from simulator.fleet import Fleet
from simulator.ratelimit import RateLimiter
from simulator.servers import Clock

MAX_SERVERS = 1_000_000


@dataclass(frozen=True)
class SimulatorOptions:
    """How big the simulated fleet is and how the simulated API behaves."""

    servers: int = 25
    seed: int = 1
    token: str = field(default="demo-token", repr=False)
    paginate: bool = False
    per_page: int = 100
    churn_interval: float = 0.0
    latency: float = 0.0
    rate_limit: int = 0
    """Requests allowed per ``rate_window`` seconds, as Laravel's throttle counts them (0: none)."""
    rate_window: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.servers <= MAX_SERVERS:
            raise ValueError(f"servers must be between 0 and {MAX_SERVERS}")
        if not self.token:
            raise ValueError("token must not be empty")
        if not 1 <= self.per_page <= 1000:
            raise ValueError("per_page must be between 1 and 1000")
        if not 0 <= self.churn_interval < math.inf:
            raise ValueError("churn_interval must be a non-negative number of seconds")
        if not 0 <= self.latency < math.inf:
            raise ValueError("latency must be a non-negative number of seconds")
        if self.rate_limit < 0 or not 0 < self.rate_window < math.inf:
            raise ValueError("rate_limit must be 0 or more, rate_window a positive number")


def format_address(host: str, port: int) -> str:
    """``host:port`` as it is written in a URL: ``[::1]:8980`` for an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP given explicitly: asyncio only disables Nagle's algorithm on accepted sockets
    # whose protocol says TCP, and an answer written as head + body would otherwise wait for the
    # client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


class _Config(hypercorn.config.Config):
    """Hypercorn's settings, serving a ready ``SSLContext`` instead of one built from file names.

    Hypercorn builds its context from ``certfile`` and ``keyfile``; overriding the public property
    that asks whether to and the method that builds it makes the caller's context the one used.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        self._ssl_context = ssl_context
        # Twice Hypercorn's 5 s, so that a client polling every 5 s does not send its next
        # request just as the server closes the idle connection.
        self.keep_alive_timeout = 10.0
        # Answers name no server, as before this module served them itself: Hypercorn's name
        # is not the API's, and nothing a client should see.
        self.include_server_header = False
        # A logger object is used as it is: no handler of Hypercorn's own, so its lines go
        # through the caller's logging set-up.
        self.errorlog = logging.getLogger("hypercorn.error")

    @property
    def ssl_enabled(self) -> bool:
        return self._ssl_context is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl_context


class _Server:
    """Hypercorn serving ``app`` on a listening socket, as a task of the running loop."""

    def __init__(
        self, app: SimulatorApp, sock: socket.socket, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._sock = sock
        self._stopping = asyncio.Event()
        config = _Config(ssl_context)
        # Hypercorn closes a socket given as "fd://N" when it stops; a duplicate leaves
        # ``sock`` to this object.
        config.bind = [f"fd://{os.dup(sock.fileno())}"]
        serving = hypercorn.asyncio.serve(
            app,  # type: ignore[arg-type]  # Hypercorn's scope and messages are TypedDicts
            config,
            shutdown_trigger=self._stopping.wait,
            mode="asgi",
        )
        self._serving = asyncio.create_task(serving, name="simulator-http")

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting, let answers in flight finish (Hypercorn bounds the wait), close."""
        self._stopping.set()
        self._sock.close()
        await self._serving


class RunningSimulator:
    """A simulator serving HTTP; ``url`` is the API base, ``control_url`` the test controls."""

    def __init__(
        self, server: _Server, app: SimulatorApp, host: str, token: str, *, tls: bool = False
    ) -> None:
        self._server = server
        self.app = app
        self.fleet: Fleet = app.fleet
        self.faults: FaultSet = app.faults
        self.token = token
        self.port = server.port
        scheme = "https" if tls else "http"
        origin = f"{scheme}://{format_address(host, self.port)}"
        self.url = f"{origin}/api/v1"
        self.control_url = f"{origin}{CONTROL_PREFIX}"

    def __repr__(self) -> str:
        return f"RunningSimulator(url={self.url!r}, servers={len(self.fleet)})"

    async def stop(self) -> None:
        await self._server.stop()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


async def start_simulator(
    options: SimulatorOptions,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningSimulator:
    """Build the fleet and serve the API on ``host:port`` (port 0 picks a free one).

    ``clock`` (Unix seconds) replaces the wall clock for the fleet, so that tests can move time.
    With ``ssl_context`` the API is served over HTTPS, as the real one is.
    """
    fleet = Fleet(
        clock or time.time,
        servers=options.servers,
        seed=options.seed,
        churn_interval=options.churn_interval,
    )
    app = SimulatorApp(
        fleet,
        FaultSet(),
        options.token,
        paginate=options.paginate,
        per_page=options.per_page,
        latency=options.latency,
        rate_limit=RateLimiter(options.rate_limit, options.rate_window, clock or time.time)
        if options.rate_limit
        else None,
    )
    # Listening before Hypercorn runs: clients that connect early wait in the kernel's queue.
    sock = _listening_socket(host, port)
    try:
        server = _Server(app, sock, ssl_context)
    except BaseException:
        sock.close()
        raise
    return RunningSimulator(server, app, host, options.token, tls=ssl_context is not None)
