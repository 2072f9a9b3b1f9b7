"""Run an ASGI application on uvicorn inside an event loop the caller owns.

uvicorn's ``Server.serve()`` installs its own signal handlers and owns the process; the exporter
runs the metrics server, and in ``--demo`` mode the simulator too, in one loop and handles
SIGTERM itself. This wrapper drives uvicorn's public start-up, tick and shutdown steps instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ServerLimits:
    """Bounds that keep one slow or hostile client from hurting the others."""

    keep_alive_seconds: int = 5
    max_connections: int = 256
    max_header_bytes: int = 16 * 1024
    graceful_shutdown_seconds: int = 3


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6, ``:port`` for every interface)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected host:port, got {address!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket; port 0 picks a free one (see ``AsgiServer.port``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class AsgiServer:
    """One uvicorn server on one pre-bound socket, started and stopped by the caller."""

    def __init__(
        self,
        app: AsgiApp,
        sock: socket.socket,
        *,
        limits: ServerLimits = ServerLimits(),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._sock = sock
        config = uvicorn.Config(
            app,
            http="h11",  # pure-Python parser with a hard cap on request-head size
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=limits.keep_alive_seconds,
            limit_concurrency=limits.max_connections,
            h11_max_incomplete_event_size=limits.max_header_bytes,
            timeout_graceful_shutdown=limits.graceful_shutdown_seconds,
        )
        config.load()
        if ssl_context is not None:
            config.ssl = ssl_context
        self._server = uvicorn.Server(config)
        self._main_loop: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        server = self._server
        server.lifespan = server.config.lifespan_class(server.config)
        await server.startup(sockets=[self._sock])
        self._main_loop = asyncio.create_task(server.main_loop(), name="uvicorn-main-loop")

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then close."""
        if self._main_loop is None:
            return
        self._server.should_exit = True
        await self._main_loop
        self._main_loop = None
        await self._server.shutdown(sockets=[self._sock])


def quiet_uvicorn_loggers() -> None:
    """uvicorn logs through stdlib logging; its lines would bypass our structured format."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
