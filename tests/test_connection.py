"""The client over real local sockets: why no answer came, cut-off answers, trust and proxies.

Each server here is a few lines of asyncio on 127.0.0.1 in the test's own event loop, so that
what reaches the client is what a real network gives: a refused port, a failed name lookup, a
certificate nobody vouches for, a body shorter than its ``Content-Length``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator

import httpx
import pytest

from exporter.api.client import EvoticClient
from exporter.api.errors import ApiConnectionError, EvoticError, InvalidResponseError
from exporter.api.network import ApiRoute, Proxy, tls_context
from exporter.api.token import TokenSource
from exporter.polling.poller import Poller, PollSettings
from exporter.runtime.logs import Redactor

from .forward_proxy import ForwardProxy
from .test_webconfig import Pki, make_pki

TOKEN = "c0nnection-canary-token-7d1e"
OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextlib.asynccontextmanager
async def serving(
    reply: bytes, *, tls: ssl.SSLContext | None = None, reset: bool = False
) -> AsyncIterator[int]:
    """A server on 127.0.0.1 that reads what comes first, sends ``reply`` and closes.

    With ``reset`` it closes with a TCP reset instead of sending anything.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read(65536)
            if reset:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            writer.write(reply)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls)
    async with server:
        yield server.sockets[0].getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on: bound for a moment, then closed again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_tls(pki: Pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    return context


class Requests:
    """The client's request observer: every (endpoint, code) it was told, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, endpoint: str, code: str, seconds: float) -> None:
        self.seen.append((endpoint, code))


async def _no_wait(seconds: float) -> None:
    return None


def _client(url: str, observe: Requests, route: ApiRoute | None = None) -> EvoticClient:
    return EvoticClient(url, lambda: TOKEN, timeout=5, user_agent="t", observe=observe,
                        route=route, sleep=_no_wait)  # fmt: skip


async def _fail(url: str, route: ApiRoute | None = None) -> tuple[EvoticError, Requests]:
    observe = Requests()
    client = _client(url, observe, route)
    try:
        with pytest.raises(EvoticError) as caught:
            await client.list_servers()
    finally:
        await client.aclose()
    return caught.value, observe


# ------------------------------------------------------------------ no answer: the cause in words


def _assert_connection_error(error: EvoticError, observe: Requests, cause: str) -> None:
    assert isinstance(error, ApiConnectionError)
    assert error.reason == "connection"
    assert error.cause == cause
    assert str(error) == f"servers: {cause}"
    assert TOKEN not in str(error)
    # Retried like every connection error, and each attempt counted once, as connection.
    assert observe.seen == [("servers", "connection")] * 3


def test_a_refused_port_says_connection_refused() -> None:
    error, observe = asyncio.run(_fail(f"http://127.0.0.1:{closed_port()}/api/v1"))
    _assert_connection_error(error, observe, "connection refused")


def test_an_unknown_host_name_says_it_was_not_resolved() -> None:
    # .invalid never resolves (RFC 2606), with or without a network.
    error, observe = asyncio.run(_fail("https://evotic-api.invalid/api/v1"))
    assert isinstance(error, ApiConnectionError)
    assert error.cause.startswith("host name not resolved (")
    _assert_connection_error(error, observe, error.cause)


def test_an_untrusted_certificate_says_why(pki: Pki) -> None:
    async def scenario() -> tuple[EvoticError, Requests]:
        async with serving(OK_EMPTY, tls=server_tls(pki)) as port:
            return await _fail(f"https://127.0.0.1:{port}/api/v1")

    error, observe = asyncio.run(scenario())
    cause = "TLS certificate not trusted: unable to get local issuer certificate"
    _assert_connection_error(error, observe, cause)


def test_https_to_a_plain_http_port_says_the_handshake_failed() -> None:
    async def scenario() -> tuple[EvoticError, Requests]:
        async with serving(OK_EMPTY) as port:
            return await _fail(f"https://127.0.0.1:{port}/api/v1")

    error, observe = asyncio.run(scenario())
    cause = "TLS handshake failed: WRONG_VERSION_NUMBER (is it a plain-HTTP port?)"
    _assert_connection_error(error, observe, cause)


def test_a_reset_connection_says_connection_reset() -> None:
    async def scenario() -> tuple[EvoticError, Requests]:
        async with serving(b"", reset=True) as port:
            return await _fail(f"http://127.0.0.1:{port}/api/v1")

    error, observe = asyncio.run(scenario())
    _assert_connection_error(error, observe, "connection reset")


def test_a_connection_closed_without_an_answer_says_so() -> None:
    async def scenario() -> tuple[EvoticError, Requests]:
        async with serving(b"") as port:
            return await _fail(f"http://127.0.0.1:{port}/api/v1")

    error, observe = asyncio.run(scenario())
    _assert_connection_error(error, observe, "connection closed without a valid HTTP answer")


# ------------------------------------------------------------------ every request counted once


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_a_cut_off_body_is_an_invalid_response_counted_once_under_its_status(head: bytes) -> None:
    async def scenario() -> tuple[EvoticError, Requests]:
        async with serving(head + b"[1,2,3") as port:
            return await _fail(f"http://127.0.0.1:{port}/api/v1")

    error, observe = asyncio.run(scenario())
    assert isinstance(error, InvalidResponseError)
    assert error.reason == "invalid_response"
    assert str(error).startswith("servers: the answer was cut off after ")
    assert observe.seen == [("servers", "200")], "not retried, and counted once"


def test_a_body_that_cannot_be_decoded_is_an_invalid_response() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 6\r\n\r\n"

    async def scenario() -> tuple[EvoticError, Requests]:
        async with serving(head + b"not gz") as port:
            return await _fail(f"http://127.0.0.1:{port}/api/v1")

    error, observe = asyncio.run(scenario())
    assert isinstance(error, InvalidResponseError)
    assert observe.seen == [("servers", "200")]


def test_a_request_cut_off_by_the_poll_deadline_is_counted_once_as_timeout() -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def scenario() -> tuple[bool, Poller, Requests]:
        observe = Requests()
        token = TokenSource(Redactor(), token=TOKEN)
        client = EvoticClient("https://api.test/v1", token, timeout=60, user_agent="t",
                              observe=observe, transport=httpx.MockTransport(never))  # fmt: skip
        poller = Poller(client, token, PollSettings(interval=0.5))
        succeeded = await poller.poll_once()
        await client.aclose()
        return succeeded, poller, observe

    succeeded, poller, observe = asyncio.run(scenario())
    assert not succeeded
    outcome = poller.state.outcome
    assert outcome is not None
    assert outcome.reason == "timeout"
    assert observe.seen == [("servers", "timeout")]


# ------------------------------------------------------------------ trust: --api.ca-file


def test_the_ca_file_makes_a_private_ca_trusted(pki: Pki) -> None:
    async def scenario() -> tuple[int, Requests]:
        observe = Requests()
        async with serving(OK_EMPTY, tls=server_tls(pki)) as port:
            client = _client(f"https://127.0.0.1:{port}/api/v1", observe,
                             ApiRoute(tls_context(pki.ca)))  # fmt: skip
            listing = await client.list_servers()
            await client.aclose()
        return len(listing.servers), observe

    servers, observe = asyncio.run(scenario())
    assert servers == 0
    assert observe.seen == [("servers", "200")]


# ------------------------------------------------------------------ a proxy: CONNECT only


def test_through_a_proxy_the_token_travels_inside_tls(pki: Pki) -> None:
    async def scenario() -> tuple[ForwardProxy, int, Requests]:
        observe = Requests()
        proxy = await ForwardProxy().start()
        try:
            async with serving(OK_EMPTY, tls=server_tls(pki)) as port:
                route = ApiRoute(tls_context(pki.ca), Proxy(proxy.url, "HTTPS_PROXY"))
                client = _client(f"https://127.0.0.1:{port}/api/v1", observe, route)
                await client.list_servers()
                await client.aclose()
        finally:
            await proxy.stop()
        return proxy, port, observe

    proxy, port, observe = asyncio.run(scenario())
    assert observe.seen == [("servers", "200")]
    assert proxy.request_lines == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"]
    assert TOKEN.encode() not in proxy.received
    assert b"Authorization" not in proxy.received


def test_a_failing_proxy_is_named_in_the_cause() -> None:
    route = ApiRoute(tls_context(None), Proxy(f"http://127.0.0.1:{closed_port()}", "HTTPS_PROXY"))
    error, _ = asyncio.run(_fail("https://api.test/v1", route))
    assert isinstance(error, ApiConnectionError)
    assert error.cause.startswith("connection refused via the proxy http://127.0.0.1:")


def test_a_proxy_that_refuses_the_tunnel_says_so() -> None:
    async def scenario() -> tuple[EvoticError, str]:
        proxy = await ForwardProxy().start()
        try:
            route = ApiRoute(tls_context(None), Proxy(proxy.url, "HTTPS_PROXY"))
            error, _ = await _fail(f"https://127.0.0.1:{closed_port()}/api/v1", route)
        finally:
            await proxy.stop()
        return error, proxy.url

    error, proxy_url = asyncio.run(scenario())
    assert isinstance(error, ApiConnectionError)
    assert error.cause == f"the proxy refused the tunnel: 502 Bad Gateway via the proxy {proxy_url}"


def test_a_proxy_is_refused_for_a_plain_http_api() -> None:
    route = ApiRoute(tls_context(None), Proxy("http://127.0.0.1:3128", "HTTP_PROXY"))
    with pytest.raises(ValueError, match="in clear"):
        EvoticClient("http://api.test/v1", lambda: TOKEN, timeout=1, user_agent="t", route=route)
