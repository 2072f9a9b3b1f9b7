"""A lean HTTP/1.1 scraper: one keep-alive connection per worker thread, latency per request.

It parses no more of the answer than it must (status line, ``Content-Length``,
``Connection``) and receives straight into a reused buffer, so at tens of megabytes per
answer the client costs little next to the server it measures. Threads, not asyncio: the
receive loop spends its time in ``recv_into``, which releases the GIL, so four workers can
wait on four sockets at once on a two-core machine.
"""

from __future__ import annotations

import itertools
import socket
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

_HEAD_LIMIT = 64 * 1024


class ScrapeError(Exception):
    """The server answered something other than a complete ``200 OK``."""


@dataclass
class Answer:
    """One response: its status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """A keep-alive connection that reconnects when the server closes it."""

    def __init__(self, host: str, port: int, timeout: float = 120.0) -> None:
        self._address = (host, port)
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray(1 << 20)
        self._pending = b""
        self.last: Answer | None = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._pending = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection(self._address, timeout=self._timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._sock

    def get(self, path: str, headers: dict[str, str] | None = None, *, keep: bool = False) -> int:
        """Send one GET and receive the whole answer; returns the body size.

        ``keep`` keeps the body for ``last``; otherwise it is overwritten by the next answer.
        """
        sock = self._connect()
        lines = [f"GET {path} HTTP/1.1", f"Host: {self._address[0]}:{self._address[1]}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            return self._receive(sock, keep)
        except (OSError, ScrapeError):
            self.close()
            raise

    def _receive(self, sock: socket.socket, keep: bool) -> int:
        head = self._pending
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                raise ScrapeError("connection closed before the response head")
            head += chunk
            if len(head) > _HEAD_LIMIT and b"\r\n\r\n" not in head:
                raise ScrapeError("response head too large")
        head, _, rest = head.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, status = status_line.split(" ", 2)[:2]
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            raise ScrapeError("chunked answers are not expected from any server measured here")
        closing = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        length = headers.get("content-length")
        if length is None and not closing:
            raise ScrapeError("neither a Content-Length nor a closing connection")
        size = int(length) if length is not None else -1
        received = self._read_body(sock, rest, size)
        if closing:
            self.close()
        if status != "200":
            raise ScrapeError(f"HTTP {status}")
        self.last = Answer(int(status), headers, bytes(self._buffer[:received]) if keep else b"")
        return received

    def _read_body(self, sock: socket.socket, rest: bytes, size: int) -> int:
        if size >= 0 and len(rest) > size:
            self._pending, rest = rest[size:], rest[:size]
        else:
            self._pending = b""
        if size > len(self._buffer):
            self._buffer = bytearray(size)
        view = memoryview(self._buffer)
        view[: len(rest)] = rest
        received = len(rest)
        while size < 0 or received < size:
            if received == len(self._buffer):  # close-delimited and larger than the buffer
                self._buffer.extend(bytearray(len(self._buffer)))
                view = memoryview(self._buffer)
            got = sock.recv_into(view[received:] if size < 0 else view[received:size])
            if not got:
                if size < 0:
                    break
                raise ScrapeError("connection closed mid-body")
            received += got
        return received


def fetch(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> Answer:
    """One request on a fresh connection, body kept."""
    connection = Connection(host, port)
    try:
        connection.get(path, headers, keep=True)
        assert connection.last is not None
        return connection.last
    finally:
        connection.close()


@dataclass
class Run:
    """Latencies of one measurement, in seconds, and what went wrong."""

    latencies: list[float] = field(default_factory=list)
    body_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Run) -> None:
        """Fold another window of the same measurement into this one."""
        self.latencies += other.latencies
        self.errors += other.errors
        self.seconds += other.seconds
        self.body_bytes = other.body_bytes or self.body_bytes

    def summary(self) -> dict[str, float | int]:
        ordered = sorted(self.latencies)
        if not ordered:
            return {"requests": 0, "errors": len(self.errors)}
        return {
            "requests": len(ordered),
            "errors": len(self.errors),
            "median_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
            "min_ms": round(ordered[0] * 1000, 3),
            "max_ms": round(ordered[-1] * 1000, 3),
            "requests_per_second": round(len(ordered) / self.seconds, 2) if self.seconds else 0,
            "body_bytes": self.body_bytes,
        }


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile: with few samples, p99 is the slowest one."""
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 1)))
    return ordered[int(rank) - 1]


def measure(
    host: str,
    port: int,
    path: str | Sequence[str],
    *,
    gzip: bool,
    workers: int,
    max_requests: int,
    max_seconds: float,
    warmup: int = 1,
) -> Run:
    """``workers`` scrapers in a loop until ``max_requests`` are done or time is up.

    Each worker first sends ``warmup`` requests that are not counted (connection set-up).
    A request started before the time is up is finished and counted. Given several paths,
    each worker asks for them in turn, the n-th worker starting at the n-th path.
    """
    headers = {"Accept-Encoding": "gzip"} if gzip else {"Accept-Encoding": "identity"}
    paths = [path] if isinstance(path, str) else list(path)
    run = Run()
    lock = threading.Lock()
    budget = [max_requests]
    deadline = [0.0]
    began = [0.0]

    def open_window() -> None:
        # Runs once, when every worker is warm, before any of them is released.
        began[0] = time.monotonic()
        deadline[0] = began[0] + max_seconds

    start = threading.Barrier(workers + 1, action=open_window)

    def worker(first: int) -> None:
        turn = itertools.cycle(paths[first % len(paths) :] + paths[: first % len(paths)])
        connection = Connection(host, port)
        try:
            for _ in range(warmup):
                connection.get(next(turn), headers)
        except (OSError, ScrapeError) as error:
            with lock:
                run.errors.append(f"warm-up: {error}")
        start.wait()
        while time.monotonic() < deadline[0]:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            began = time.perf_counter()
            try:
                size = connection.get(next(turn), headers)
            except (OSError, ScrapeError) as error:
                with lock:
                    run.errors.append(str(error))
                continue
            elapsed = time.perf_counter() - began
            with lock:
                run.latencies.append(elapsed)
                run.body_bytes = size
        connection.close()

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(workers)]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join()
    run.seconds = time.monotonic() - began[0]
    return run
