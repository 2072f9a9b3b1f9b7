"""AsgiServer in process: each of ServerLimits' limits, with small values, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from exporter.web.server import (
    PLAIN_HTTP_HINT,
    AsgiServer,
    HttpsContext,
    Receive,
    Scope,
    Send,
    ServerLimits,
    bind_socket,
)

from .test_webconfig import Pki, make_pki

LIMITS = ServerLimits(
    request_head_seconds=0.5,
    tls_handshake_seconds=0.5,
    max_connections=2,
    max_header_bytes=1024,
    graceful_shutdown_seconds=1.0,
)


class App:
    """Answers "ok"; a request to /slow reports in on ``slow`` and waits until ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.slow: asyncio.Queue[None] = asyncio.Queue()
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        if scope["path"] == "/slow":
            self.slow.put_nowait(None)
            await self.release.wait()
        start = {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-length", b"3")]}  # fmt: skip
        await send(start)
        await send({"type": "http.response.body", "body": b"ok\n"})


@contextlib.asynccontextmanager
async def serving(app: App, ssl_context: HttpsContext | None = None) -> AsyncIterator[int]:
    server = AsgiServer(app, bind_socket("127.0.0.1", 0), limits=LIMITS, ssl_context=ssl_context)
    await server.start()
    try:
        yield server.port
    finally:
        app.release.set()
        await server.stop()


async def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload`` and read what comes back until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def seconds_until_closed(port: int, payload: bytes = b"", answer: bytes = b"") -> float:
    """How long the server keeps a connection open after ``payload`` (and ``answer`` back)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        if answer:
            assert (await reader.readuntil(answer)).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 5) == b""
        return time.monotonic() - started
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def test_a_head_over_the_size_limit_gets_431() -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 2048 + b"\r\n"

    async def main() -> None:
        app = App()
        async with serving(app) as port:
            whole = await exchange(port, big + b"\r\n")  # parsed, then refused by size
            incomplete = await exchange(port, big)  # refused by the parser while incomplete
            small = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert whole.startswith(b"HTTP/1.1 431 "), whole[:100]
        assert whole.endswith(b"request head too large\n")
        assert incomplete.startswith(b"HTTP/1.1 431 "), incomplete[:100]
        assert small.startswith(b"HTTP/1.1 200 ")
        assert app.requests == 1

    asyncio.run(main())


def test_a_connection_without_a_whole_head_is_closed_at_the_deadline() -> None:
    async def main() -> None:
        async with serving(App()) as port:
            silent = seconds_until_closed(port)
            half = seconds_until_closed(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            # Keep-alive: the deadline starts again after a response.
            idle = seconds_until_closed(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"ok\n")
            for seconds in await asyncio.gather(silent, half, idle):
                assert 0.4 < seconds < 2.0

    asyncio.run(main())


def test_requests_beyond_the_cap_get_503_and_the_slots_come_back() -> None:
    async def main() -> None:
        app = App()
        async with serving(app) as port, httpx.AsyncClient(timeout=5) as client:
            url = f"http://127.0.0.1:{port}"
            slow = [asyncio.create_task(client.get(f"{url}/slow")) for _ in range(2)]
            for _ in slow:
                await app.slow.get()
            refused = await client.get(f"{url}/slow")
            app.release.set()
            served = await asyncio.gather(*slow)
            assert refused.status_code == 503
            assert [r.status_code for r in served] == [200, 200]
            assert (await client.get(url)).status_code == 200

    asyncio.run(main())


def test_stop_lets_a_request_in_flight_finish_and_accepts_no_more() -> None:
    async def main() -> None:
        app = App()
        server = AsgiServer(app, bind_socket("127.0.0.1", 0), limits=LIMITS)
        await server.start()
        port = server.port
        async with httpx.AsyncClient(timeout=5) as client:
            in_flight = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/slow"))
            await app.slow.get()
            stopping = asyncio.create_task(server.stop())
            await asyncio.sleep(0.2)
            assert not stopping.done()
            app.release.set()
            assert (await in_flight).status_code == 200
            await stopping
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")

    asyncio.run(main())


def test_stop_gives_up_on_a_request_after_the_graceful_deadline() -> None:
    async def main() -> None:
        app = App()
        server = AsgiServer(app, bind_socket("127.0.0.1", 0), limits=LIMITS)
        await server.start()
        async with httpx.AsyncClient(timeout=5) as client:
            never = asyncio.create_task(client.get(f"http://127.0.0.1:{server.port}/slow"))
            await app.slow.get()
            started = time.monotonic()
            await server.stop()
            assert 0.9 < time.monotonic() - started < 3.0
            # Cut off before it answered, the request gets Hypercorn's 500.
            assert (await never).status_code == 500

    asyncio.run(main())


def test_start_and_stop_install_no_signal_handlers() -> None:
    def handlers() -> dict[int, object]:
        return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    async def main() -> None:
        before = handlers()  # asyncio.run's own SIGINT handler included
        async with serving(App()) as port, httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
            assert handlers() == before
        assert handlers() == before

    asyncio.run(main())


def https_context(pki: Pki) -> HttpsContext:
    context = HttpsContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    return context


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    return make_pki(tmp_path_factory.mktemp("pki-a")), make_pki(tmp_path_factory.mktemp("pki-b"))


def test_a_silent_tls_client_is_closed_at_the_handshake_deadline(pkis: tuple[Pki, Pki]) -> None:
    first, _ = pkis
    context = https_context(first)

    async def main() -> None:
        async with serving(App(), context) as port:
            assert 0.4 < await seconds_until_closed(port) < 2.0

    asyncio.run(main())


def test_tls_is_served_from_the_callers_context_as_it_changes(pkis: tuple[Pki, Pki]) -> None:
    first, second = pkis
    context = https_context(first)

    async def get(port: int, trust: ssl.SSLContext) -> int:
        async with httpx.AsyncClient(verify=trust, timeout=5) as client:
            return (await client.get(f"https://127.0.0.1:{port}/")).status_code

    async def main() -> None:
        async with serving(App(), context) as port:
            assert await get(port, first.client_context()) == 200
            context.load_cert_chain(second.server_cert, second.server_key)
            assert await get(port, second.client_context()) == 200
            with pytest.raises(httpx.ConnectError):
                await get(port, first.client_context())

    asyncio.run(main())


async def plain_http_answer(port: int, request: bytes) -> tuple[bytes, float]:
    """Send ``request`` in plain text; the whole answer, and how long the connection then
    stays open while this client keeps its side open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answer = head + await asyncio.wait_for(reader.readexactly(length), 5)
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 5) == b""
        return answer, time.monotonic() - started
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def test_plain_http_on_the_tls_port_gets_400_with_a_hint(pkis: tuple[Pki, Pki]) -> None:
    first, _ = pkis

    async def main() -> None:
        app = App()
        async with serving(app, https_context(first)) as port:
            get = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            answer, held = await plain_http_answer(port, get)
            head = await plain_http_answer(port, b"HEAD / HTTP/1.0\r\n\r\n")
            # A TLS client right after is served as ever.
            async with httpx.AsyncClient(verify=first.client_context(), timeout=5) as client:
                scraped = await client.get(f"https://127.0.0.1:{port}/metrics")
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
        assert b"\r\nconnection: close\r\n" in answer
        assert answer.endswith(b"\r\n\r\n" + PLAIN_HTTP_HINT)
        assert PLAIN_HTTP_HINT == b"This port speaks HTTPS: use https:// instead of http://.\n"
        assert head[0] == answer
        # A client that keeps the connection after the answer is closed at the TLS handshake
        # deadline, as a silent TLS client is.
        assert 0.4 < held < 2.0
        assert scraped.status_code == 200
        assert app.requests == 1  # the plain requests never reached the application

    asyncio.run(main())


def test_bytes_neither_tls_nor_http_get_no_answer_and_a_trickle_meets_the_deadline(
    pkis: tuple[Pki, Pki],
) -> None:
    first, _ = pkis

    async def main() -> None:
        async with serving(App(), https_context(first)) as port:
            garbage = exchange(port, b"\x00\x01\x02\x03\x04\x05 not a protocol\r\n\r\n")
            # Fewer bytes than a record header: neither TLS nor HTTP can be told yet.
            trickle = seconds_until_closed(port, b"GE")
            got, seconds = await asyncio.gather(garbage, trickle)
        assert got == b""
        assert 0.4 < seconds < 2.0

    asyncio.run(main())
