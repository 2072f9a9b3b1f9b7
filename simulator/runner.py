"""Start the simulator on a real socket inside the caller's event loop, and stop it again."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import TracebackType

from exporter.settings.model import format_address
from exporter.web.server import AsgiServer, HttpsContext, bind_socket
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


class RunningSimulator:
    """A simulator serving HTTP; ``url`` is the API base, ``control_url`` the test controls."""

    def __init__(
        self, server: AsgiServer, app: SimulatorApp, host: str, token: str, *, tls: bool = False
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
    ssl_context: HttpsContext | None = None,
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
    sock = bind_socket(host, port)
    server = AsgiServer(app, sock, ssl_context=ssl_context)
    try:
        await server.start()
    except BaseException:
        sock.close()
        raise
    return RunningSimulator(server, app, host, options.token, tls=ssl_context is not None)
