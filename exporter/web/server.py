"""Run an ASGI application on Hypercorn inside an event loop the caller owns.

The exporter runs the metrics server, and in ``--demo`` mode the simulator too, in one loop and
handles SIGTERM itself. Hypercorn's ``serve()`` installs no signal handlers when it is given a
shutdown trigger, and its settings bound what a slow or hostile client can hold: a deadline for
each request head, a TLS handshake deadline, a cap on an incomplete head and a bounded graceful
shutdown. The two limits it has no setting for (a whole head that arrives in one read, and the
number of requests served at once) are checked by ``Guard`` in the ASGI layer. A plain HTTP
request on a TLS port is answered with 400 by ``HttpsContext``, below Hypercorn.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import hypercorn.asyncio
import hypercorn.config

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ServerLimits:
    """Bounds that keep one slow or hostile client from hurting the others.

    ``request_head_seconds`` runs from the moment a connection opens, and again from the end
    of each response: a connection that has not sent a whole request head by then is closed.
    It is also how long an idle keep-alive connection stays open. ``max_connections`` counts
    connections with a request being served (HTTP/1.1 serves one at a time on a connection);
    beyond it a request gets 503. A connection that sends no request holds no slot: the head
    deadline closes it.
    """

    request_head_seconds: float = 10.0
    tls_handshake_seconds: float = 10.0
    max_connections: int = 256
    max_header_bytes: int = 16 * 1024
    graceful_shutdown_seconds: float = 3.0


class Guard:
    """ASGI middleware for the limits Hypercorn has no setting for.

    h11 caps only a request head that is still incomplete: one that arrives whole in a single
    read passes at any size, so its size is checked here, from the parsed head (431). Requests
    beyond ``max_in_flight`` at once get 503.
    """

    def __init__(self, app: AsgiApp, *, max_head_bytes: int, max_in_flight: int) -> None:
        self._app = app
        self._max_head_bytes = max_head_bytes
        self._max_in_flight = max_in_flight
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
        elif head_size(scope) > self._max_head_bytes:
            await _refuse(send, 431, b"request head too large\n")
        elif self._in_flight >= self._max_in_flight:
            await _refuse(send, 503, b"too many requests at once\n")
        else:
            self._in_flight += 1
            try:
                await self._app(scope, receive, send)
            finally:
                self._in_flight -= 1


def head_size(scope: Scope) -> int:
    """The size of an HTTP/1.1 request head as it was sent, from its ASGI scope."""
    query: bytes = scope["query_string"]
    target = len(scope["raw_path"]) + (len(query) + 1 if query else 0)
    line = len(scope["method"]) + 1 + target + len(" HTTP/") + len(scope["http_version"]) + 2
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"]) + 2


async def _refuse(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# The words Go's net/http answers with (server.go), which operators of Go exporters know already.
PLAIN_HTTP_HINT = b"This port speaks HTTPS: use https:// instead of http://.\n"
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(PLAIN_HTTP_HINT)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + PLAIN_HTTP_HINT
)


class _AnswersPlainHttp(ssl.SSLObject):
    """One connection's TLS state; a handshake that turns out to be plain HTTP gets the 400.

    ``answer_to`` is the connection's outgoing BIO, set by ``HttpsContext.wrap_bio``.
    """

    answer_to: ssl.MemoryBIO | None = None
    _refused: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        if self._refused is not None:
            raise self._refused
        try:
            super().do_handshake()
        except ssl.SSLError as error:
            if error.reason != "HTTP_REQUEST" or self.answer_to is None:
                raise
            self._refused = error
            self.answer_to.write(PLAIN_HTTP_ANSWER)
            # "Wants to read" makes the caller send what the outgoing BIO holds, the answer,
            # and wait for the client, who closes after "connection: close"; the handshake
            # deadline closes one that does not, and anything it sends fails as before.
            raise ssl.SSLWantReadError("answered plain HTTP on a TLS port") from None


class HttpsContext(ssl.SSLContext):
    """A server ``SSLContext`` whose connections answer a plain HTTP request with 400.

    OpenSSL recognises a first record that begins like an HTTP request (``GET``, ``HEAD``,
    ``POST``, ``PUT``) and fails the handshake with the reason ``HTTP_REQUEST``; asyncio
    then drops the connection without a word, and someone who wrote http:// for https://
    sees an empty reply. Through the ssl module's hooks for memory BIOs (``wrap_bio``,
    ``sslobject_class``) each connection's ``SSLObject`` writes a plain-text 400 into its
    outgoing BIO instead. Only the handshake goes through Python code of its own here:
    reading and writing after it are the ``SSLObject``'s own.

    Peeking at each connection's first byte in an accept loop of the exporter's own would
    need a way to hand the accepted connection on to Hypercorn, and its public API serves
    listening sockets only.
    """

    sslobject_class = _AnswersPlainHttp

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        tls = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if server_side and isinstance(tls, _AnswersPlainHttp):
            tls.answer_to = outgoing
        return tls


class _Config(hypercorn.config.Config):
    """Hypercorn's settings, serving the ``SSLContext`` the exporter built.

    Hypercorn builds its own context from file names; this overrides the public method that
    builds it (and the property that asks whether to), so that the one context the exporter
    made, which moves each connection onto the certificates of the moment
    (``certificates.py``), is the one that serves.
    """

    def __init__(self, ssl_context: HttpsContext | None) -> None:
        self._ssl_context = ssl_context

    @property
    def ssl_enabled(self) -> bool:
        return self._ssl_context is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl_context


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
    """One Hypercorn server on one pre-bound socket, started and stopped by the caller."""

    def __init__(
        self,
        app: AsgiApp,
        sock: socket.socket,
        *,
        limits: ServerLimits = ServerLimits(),
        ssl_context: HttpsContext | None = None,
    ) -> None:
        self._sock = sock
        self._app = Guard(app, max_head_bytes=limits.max_header_bytes,
                          max_in_flight=limits.max_connections)  # fmt: skip
        config = _Config(ssl_context)
        # Hypercorn's one timer for a connection without a request: from the connection's
        # start or its last response until a whole request head has arrived.
        config.keep_alive_timeout = limits.request_head_seconds
        config.ssl_handshake_timeout = limits.tls_handshake_seconds
        config.h11_max_incomplete_size = limits.max_header_bytes
        config.h2_max_header_list_size = limits.max_header_bytes
        config.graceful_timeout = limits.graceful_shutdown_seconds
        config.include_server_header = False
        # A logger object is used as it is: no handler of Hypercorn's own, so its lines go
        # through the caller's logging set-up.
        config.errorlog = logging.getLogger("hypercorn.error")
        config.accesslog = None
        self._config = config
        self._stopping = asyncio.Event()
        self._serving: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        # Listening now, clients queue in the kernel until Hypercorn starts accepting.
        self._sock.listen(self._config.backlog)
        # Hypercorn takes a listening socket as "fd://N" and closes that descriptor when it
        # stops; a duplicate leaves ``sock`` to this object, which closes it in stop().
        self._config.bind = [f"fd://{os.dup(self._sock.fileno())}"]
        serving = hypercorn.asyncio.serve(
            self._app,  # type: ignore[arg-type]  # Hypercorn's scope types are TypedDicts
            self._config,
            shutdown_trigger=self._stopping.wait,
            mode="asgi",
        )
        self._serving = asyncio.create_task(serving, name="http-server")

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then close."""
        if self._serving is None:
            return
        self._stopping.set()
        self._sock.close()
        await self._serving
        self._serving = None


def quiet_server_loggers() -> None:
    """Hypercorn logs through stdlib logging; its start-up lines would bypass our format."""
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
