"""Run an ASGI application on uvicorn inside an event loop the caller owns.

uvicorn's ``Server.serve()`` installs its own signal handlers and owns the process; the exporter
runs the metrics server, and in ``--demo`` mode the simulator too, in one loop and handles
SIGTERM itself. This wrapper drives uvicorn's public start-up, tick and shutdown steps instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ServerLimits:
    """Bounds that keep one slow or hostile client from hurting the others."""

    keep_alive_seconds: int = 5
    request_head_seconds: float = 10.0
    tls_handshake_seconds: float = 10.0
    max_connections: int = 256
    max_header_bytes: int = 16 * 1024
    graceful_shutdown_seconds: int = 3


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with two guards it lacks: a size cap on every request head, and
    a deadline for a whole head to arrive.

    uvicorn times out idle keep-alive connections only after a first response; a client that
    connects and sends nothing, or half a request, would otherwise hold its connection (and a
    slot of ``max_connections``) for ever.
    """

    head_timeout: float = 10.0
    max_head_bytes: int = 16 * 1024
    _head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        # h11 caps only a head that is still incomplete; one that arrives whole in a single
        # read passes at any size. Measure it here, before h11 parses it.
        if self.conn.their_state is h11.IDLE:
            end = data.find(b"\r\n\r\n")
            head = len(self.conn.trailing_data[0]) + (len(data) if end < 0 else end)
            if head > self.max_head_bytes:
                body = b"request head too large\n"
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                    b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                self.transport.close()
                return
        super().data_received(data)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        # IDLE: no complete request head since the timer was armed. A request being served
        # is left alone; the keep-alive timeout covers the time after it.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket; port 0 picks a free one (see ``AsgiServer.port``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP given explicitly: asyncio only disables Nagle's algorithm on accepted
    # sockets whose protocol says TCP, and a response written as head + body would otherwise
    # wait some 40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
        guards = {
            "head_timeout": limits.request_head_seconds,
            "max_head_bytes": limits.max_header_bytes,
        }
        protocol = type("GuardedH11", (_GuardedH11,), guards)
        config = uvicorn.Config(
            app,
            http=protocol,  # h11: a pure-Python parser with a hard cap on request-head size
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
        self._tls_handshake_seconds = limits.tls_handshake_seconds
        self._main_loop: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        server = self._server
        server.lifespan = server.config.lifespan_class(server.config)
        if server.config.ssl is None:
            await server.startup(sockets=[self._sock])
        else:
            await self._start_tls(server)
        self._main_loop = asyncio.create_task(server.main_loop(), name="uvicorn-main-loop")

    async def _start_tls(self, server: uvicorn.Server) -> None:
        # uvicorn's startup() passes no ssl_handshake_timeout, and asyncio's default lets each
        # client that never sends a ClientHello hold a socket for 60 s, before the protocol's
        # own guards even start. This is what startup() does for a pre-bound socket with
        # lifespan off, plus that one argument.
        config = server.config
        # Typed by uvicorn as a bare asyncio.Protocol; it is the h11 class chosen above.
        protocol_class: Callable[..., asyncio.Protocol] = config.http_protocol_class
        protocol = functools.partial(protocol_class, config=config,
                                     server_state=server.server_state,
                                     app_state=server.lifespan.state)  # fmt: skip
        server.servers = [
            await asyncio.get_running_loop().create_server(
                protocol, sock=self._sock, ssl=config.ssl, backlog=config.backlog,
                ssl_handshake_timeout=self._tls_handshake_seconds,
            )
        ]  # fmt: skip
        server.started = True

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
