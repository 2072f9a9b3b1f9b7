"""The HTTP side: ``/``, ``/metrics``, ``/healthz`` and ``/readyz`` as a plain ASGI app.

``/metrics`` is the account's per-server exposition from its cache (rendered once per snapshot),
followed by the exporter's own metrics, which prometheus_client renders for each scrape.
Nothing here waits for the Evotic API.
"""

from __future__ import annotations

import html
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import cast

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from exporter.account import Account
from exporter.exposition import Format
from exporter.webconfig import CHALLENGE, BasicAuth
from exporter.webserver import Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]

TEXT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = b"application/openmetrics-text; version=1.0.0; charset=utf-8"
PLAIN = b"text/plain; charset=utf-8"
METHODS = (b"GET", b"HEAD")
# Basic auth guards the data. /healthz and /readyz stay open for kubelet and systemd probes,
# which carry no credentials; they answer with a fixed word or a bounded reason, never data.
PROTECTED = frozenset({"/", "/metrics"})

_openmetrics_latest = cast(Callable[[CollectorRegistry], bytes], openmetrics.generate_latest)


def _media_ranges(header: str) -> list[tuple[str, dict[str, str], float]]:
    """``(token, parameters, q)`` for each entry of an Accept or Accept-Encoding header,
    highest ``q`` first; entries of equal ``q`` keep their order (a stable sort)."""
    entries = []
    for entry in header.split(","):
        token, *raw = (part.strip() for part in entry.split(";"))
        params = {}
        for param in raw:
            name, _, value = param.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if token:
            entries.append((token.lower(), params, q))
    return sorted(entries, key=lambda entry: -entry[2])


# The only OpenMetrics version this exporter writes.
OPENMETRICS_VERSION = "1.0.0"


def negotiate(accept: str, accept_encoding: str) -> tuple[Format, bool]:
    """Which format and whether to gzip, as prometheus_client's ``choose_encoder`` decides,
    with the entries ranked by ``q``.

    OpenMetrics is served for the best-ranked acceptable entry that asks for it without a
    version or with version 1.0.0; an entry for another OpenMetrics version (0.0.1, 2.0.0)
    cannot be served and is passed over; anything else, or nothing, gets the text format.
    """
    fmt: Format = "text"
    for media, params, q in _media_ranges(accept):
        if q <= 0:
            continue
        if media == "application/openmetrics-text":
            if params.get("version", OPENMETRICS_VERSION) == OPENMETRICS_VERSION:
                fmt = "openmetrics"
                break
            continue
        if media in ("text/plain", "*/*", "text/*"):
            break
    gzip = any(t in ("gzip", "x-gzip") and q > 0 for t, _, q in _media_ranges(accept_encoding))
    return fmt, gzip


# Bodies larger than SEND_WHOLE go out in slices of SEND_SLICE. Hypercorn waits for the socket to
# drain between two sends, so such a scrape holds a slice or two, not a copy of the rest of the
# body: asyncio on Python 3.11 copies whatever the socket does not take at once into a buffer of
# its own (15 MB per plain scrape at 10,000 servers, 80 MB at 50,000). Smaller bodies go whole:
# waiting for the socket to drain costs more than copying a few megabytes.
SEND_WHOLE = 4 * 1024 * 1024
SEND_SLICE = 1024 * 1024


def _pieces(chunk: bytes) -> Iterator[bytes]:
    if len(chunk) <= SEND_WHOLE:
        yield chunk
        return
    view = memoryview(chunk)
    for start in range(0, len(chunk), SEND_SLICE):
        yield bytes(view[start : start + SEND_SLICE])


@dataclass(frozen=True)
class _Access:
    """Who may read the data, and the headers every response carries: what a reload of the web
    configuration replaces, as one value, so that a request sees the old pair or the new one."""

    auth: BasicAuth | None
    headers: Headers

    @classmethod
    def of(cls, extra_headers: Mapping[str, str] | None, auth: BasicAuth | None) -> _Access:
        encoded = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in (extra_headers or {}).items()]  # fmt: skip
        return cls(auth, encoded)


class ExporterApp:
    """ASGI application serving one account's metrics and the exporter's own."""

    def __init__(
        self,
        account: Account,
        process: CollectorRegistry,
        *,
        version: str,
        extra_headers: Mapping[str, str] | None = None,
        auth: BasicAuth | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._account = account
        self._access = _Access.of(extra_headers, auth)
        self._own = (account.metrics.registry, process)
        self._version = version
        self._log = logger or structlog.get_logger("exporter.server")
        self._routes: dict[str, Callable[[Scope], Awaitable[tuple[int, Headers, list[bytes]]]]]
        self._routes = {
            "/": self._landing,
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
        }

    def set_access(
        self, *, extra_headers: Mapping[str, str] | None, auth: BasicAuth | None
    ) -> None:
        """Replace the basic-auth users and the extra headers, for a reloaded web configuration.

        A request under way finishes with those it started with.
        """
        self._access = _Access.of(extra_headers, auth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        access = self._access
        method = scope["method"].encode("latin-1")
        route = self._routes.get(scope["path"])
        if route is None:
            status, headers, chunks = 404, [(b"content-type", PLAIN)], [b"not found\n"]
        elif method not in METHODS:
            status, headers, chunks = (
                405,
                [(b"content-type", PLAIN), (b"allow", b"GET, HEAD")],
                [b"method not allowed\n"],
            )
        elif not await self._authorized(scope, access.auth):
            status, headers, chunks = (
                401,
                [(b"content-type", PLAIN), (b"www-authenticate", CHALLENGE)],
                [b"unauthorized\n"],
            )
        else:
            try:
                status, headers, chunks = await route(scope)
            except Exception:
                self._log.exception("request failed", path=scope["path"])
                status, headers, chunks = 500, [(b"content-type", PLAIN)], [b"internal error\n"]
        await self._send(send, method, status, headers, chunks, access.headers)
        self._log.debug(
            "request", method=scope["method"], path=scope["path"], status=status,
            seconds=round(time.perf_counter() - started, 4),
        )  # fmt: skip

    async def _authorized(self, scope: Scope, auth: BasicAuth | None) -> bool:
        if auth is None or scope["path"] not in PROTECTED:
            return True
        authorization = next((v for k, v in scope["headers"] if k.lower() == b"authorization"),
                             None)  # fmt: skip
        return await auth.authenticate(authorization)

    async def _send(
        self, send: Send, method: bytes, status: int, headers: Headers, chunks: list[bytes],
        extra: Headers,
    ) -> None:  # fmt: skip
        length = sum(len(chunk) for chunk in chunks)
        headers = [*headers, (b"content-length", str(length).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if method == b"HEAD":
            chunks = []
        pieces = (piece for chunk in chunks for piece in _pieces(chunk))
        piece = next(pieces, b"")
        while True:
            following = next(pieces, None)
            more = following is not None
            await send({"type": "http.response.body", "body": piece, "more_body": more})
            if following is None:
                break
            piece = following

    async def _metrics(self, scope: Scope) -> tuple[int, Headers, list[bytes]]:
        request = {k.lower(): v for k, v in scope["headers"]}
        fmt, gzip = negotiate(
            request.get(b"accept", b"").decode("latin-1"),
            request.get(b"accept-encoding", b"").decode("latin-1"),
        )
        view = self._account.view()
        own = self._render_own(fmt)
        headers: Headers = [
            (b"content-type", OPENMETRICS_TYPE if fmt == "openmetrics" else TEXT_TYPE),
            (b"vary", b"Accept, Accept-Encoding"),
            (b"cache-control", b"no-store"),
        ]
        if gzip:
            stream = await view.exposition.compressed(fmt)
            headers.append((b"content-encoding", b"gzip"))
            return 200, headers, [stream.head, stream.finish(own)]
        return 200, headers, [await view.exposition.body(fmt), own]

    def _render_own(self, fmt: Format) -> bytes:
        if fmt == "text":
            return b"".join(generate_latest(registry) for registry in self._own)
        *first, last = self._own  # one "# EOF", at the very end
        body = [_openmetrics_latest(registry).removesuffix(b"# EOF\n") for registry in first]
        return b"".join([*body, _openmetrics_latest(last)])

    async def _healthz(self, scope: Scope) -> tuple[int, Headers, list[bytes]]:
        if self._account.alive():
            return 200, [(b"content-type", PLAIN)], [b"ok\n"]
        return 503, [(b"content-type", PLAIN)], [b"poll loop is not running\n"]

    async def _readyz(self, scope: Scope) -> tuple[int, Headers, list[bytes]]:
        health = self._account.view().health
        return (
            (200 if health.ready else 503),
            [(b"content-type", PLAIN)],
            [f"{health.reason}\n".encode()],
        )

    async def _landing(self, scope: Scope) -> tuple[int, Headers, list[bytes]]:
        version = html.escape(self._version)
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evotic exporter</title></head>
<body>
<h1>Evotic exporter</h1>
<p>Version {version}. Prometheus metrics for servers hosted at Evotic.</p>
<ul>
<li><a href="metrics">metrics</a></li>
<li><a href="healthz">healthz</a> (the process and its poll loop are alive)</li>
<li><a href="readyz">readyz</a> (a recent successful poll is being served)</li>
</ul>
</body></html>
"""
        return 200, [(b"content-type", b"text/html; charset=utf-8")], [page.encode()]
