"""The HTTP side under abuse: silent, slow and malformed clients, floods of scrapers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .processes import Process, exporter

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    path = tmp_path_factory.mktemp("abuse")
    with exporter(path, "--demo", "--poll.interval", "1") as proc:
        yield proc


def _address(proc: Process) -> tuple[str, int]:
    host, port = proc.url.removeprefix("http://").split(":")
    return host, int(port)


def _raw(proc: Process, payload: bytes, read_timeout: float = 10.0) -> bytes:
    """Send raw bytes and read until the server closes or stops answering."""
    with socket.create_connection(_address(proc), timeout=read_timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and payload.startswith(b"GET /metrics"):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_silent_and_half_requests_do_not_delay_scrapes(demo: Process) -> None:
    silent = [socket.create_connection(_address(demo)) for _ in range(20)]
    half = [socket.create_connection(_address(demo)) for _ in range(20)]
    for sock in half:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: httpx.get(f"{demo.url}/metrics", timeout=10),
                                      range(16)))  # fmt: skip
        assert [r.status_code for r in responses] == [200] * 16
        assert all(r.text.count("# HELP evotic_up ") == 1 for r in responses)
    finally:
        for sock in silent + half:
            sock.close()


def test_connection_without_a_request_head_is_closed(demo: Process) -> None:
    with socket.create_connection(_address(demo), timeout=30) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        assert sock.recv(1024) == b"", "the server should close the connection"
        assert time.monotonic() - started < 25


@pytest.mark.parametrize(
    "payload",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 5_000 + b"\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: nope\r\nHost: x\r\n\r\n",
        b"\r\n\r\n\r\n",
    ],
    ids=["tls-to-plain", "huge-url", "huge-header", "many-headers", "bad-length", "empty"],
)
def test_malformed_requests_get_a_4xx(demo: Process, payload: bytes) -> None:
    response = _raw(demo, payload)
    assert response.startswith(b"HTTP/1.1 4"), response[:200]
    assert httpx.get(f"{demo.url}/healthz").status_code == 200


def test_unknown_methods_and_bodies(demo: Process) -> None:
    assert _status(_raw(demo, b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n")) == 405
    big = httpx.post(f"{demo.url}/metrics", content=b"x" * 5_000_000, timeout=10)
    assert big.status_code == 405
    assert httpx.request("OPTIONS", f"{demo.url}/metrics").status_code == 405


def test_sixteen_concurrent_scrapers_get_complete_bodies(demo: Process) -> None:
    reference = httpx.get(f"{demo.url}/metrics").text.count("\n")

    def scrape(_: int) -> int:
        with httpx.Client(timeout=10) as client:
            return sum(client.get(f"{demo.url}/metrics").status_code == 200 for _ in range(5))

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(scrape, range(16))) == 80
    assert abs(httpx.get(f"{demo.url}/metrics").text.count("\n") - reference) < 50
