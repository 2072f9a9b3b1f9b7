"""The HTTP side: ``/``, ``/metrics``, ``/probe``, ``/healthz``, ``/readyz`` and ``/-/reload``
as a plain ASGI app.

``/probe?target=NAME`` is an account's per-server exposition from its cache (rendered once per
snapshot), followed by the account's own metrics (rendered by prometheus_client once per change
of any of them). Without a configuration file ``/metrics`` is the same for the one account plus the
process's metrics; with one, it is the process's metrics and every account's own metrics, each
labelled with its account. Nothing here waits for the Evotic API.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol
from urllib.parse import parse_qs, quote

import structlog
from prometheus_client import CollectorRegistry

from exporter.exposition.own_metrics import (
    AccountMetrics,
    AccountScalars,
    LabelledAccounts,
    render_registry,
)
from exporter.exposition.render import Exposition, Format, compress_open
from exporter.polling.health import Health
from exporter.settings.accounts import DEFAULT_ACCOUNT
from exporter.web.config import CHALLENGE, BasicAuth
from exporter.web.server import Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Status:
    """What the landing page says of an account: its health, the age of the data it serves,
    why its last poll failed (``None``: it did not), and the rate limit the API last stated
    (``(limit, remaining)``, ``None`` until it has)."""

    health: Health
    age: float | None
    last_error: str | None
    rate: tuple[int, int] | None


@dataclass(frozen=True)
class View:
    """What a scrape serves: the per-server exposition (headers alone when there is nothing to
    trust) and the account's health."""

    exposition: Exposition
    health: Health


class Target(Protocol):
    """What the app needs of an account it serves (``exporter.service.account.Account``)."""

    @property
    def metrics(self) -> AccountMetrics: ...

    def health(self) -> Health:
        """The account's health as of now; reads only."""
        ...

    def exposition(self, health: Health) -> Exposition:
        """The per-server exposition to serve with ``health``; reads only."""
        ...

    def status(self) -> Status: ...

    def poll_now(self) -> None: ...

    def alive(self) -> bool: ...


def scraped(target: Target) -> View:
    """What a scrape of ``target`` serves, its own metrics (``evotic_up``, the server counts)
    set to it first, so that the scrape reports the health it serves."""
    health = target.health()
    target.metrics.serving(health)
    return View(target.exposition(health), health)


TEXT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = b"application/openmetrics-text; version=1.0.0; charset=utf-8"
PLAIN = b"text/plain; charset=utf-8"
METHODS = (b"GET", b"HEAD")
# Basic auth guards the data. /healthz and /readyz stay open for kubelet and systemd probes,
# which carry no credentials; they answer with a fixed word or a bounded reason, never data.
PROTECTED = frozenset({"/", "/metrics", "/probe", "/-/reload", "/-/poll"})
LIFECYCLE_OFF = "the lifecycle API is off: start with --web.enable-lifecycle"

# What a scrape's own part is made of: each renders itself in a format.
Rendering = Callable[[Format], bytes]


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


def _render(fmt: Format, parts: tuple[Rendering, ...]) -> bytes:
    """``parts`` rendered one after the other, with one ``# EOF`` at the end in OpenMetrics. A
    single part's bytes are its own, so that an unchanged part is the same object again."""
    bodies = [part(fmt) for part in parts]
    if len(bodies) == 1:
        return bodies[0]
    if fmt == "openmetrics":
        bodies[:-1] = [body.removesuffix(b"# EOF\n") for body in bodies[:-1]]
    return b"".join(bodies)


# Bodies larger than SEND_WHOLE go out in slices of SEND_SLICE. Hypercorn waits for the socket to
# drain between two sends, so such a scrape holds a slice or two, not a copy of the rest of the
# body: asyncio on Python 3.11 copies whatever the socket does not take at once into a buffer of
# its own (15 MB per plain scrape at 10,000 servers, 80 MB at 50,000). A slice, and h11's copy
# of it, stays under the 128 KiB from which glibc maps every block afresh (``tune_allocator`` in
# cli.py): slices then reuse heap memory instead of faulting in new pages on every send, which
# halved a plain scrape at 10,000 servers (benchmarks/README.md). Smaller bodies go whole:
# waiting for the socket to drain costs more than copying a few megabytes.
SEND_WHOLE = 4 * 1024 * 1024
SEND_SLICE = 112 * 1024


def _pieces(chunk: bytes) -> Iterator[bytes]:
    if len(chunk) <= SEND_WHOLE:
        yield chunk
        return
    view = memoryview(chunk)
    for start in range(0, len(chunk), SEND_SLICE):
        yield bytes(view[start : start + SEND_SLICE])


Route = Callable[[Scope], Awaitable[tuple[int, Headers, list[bytes]]]]


def _text(status: int, line: str) -> tuple[int, Headers, list[bytes]]:
    return status, [(b"content-type", PLAIN)], [f"{line}\n".encode()]


def _no_such_account(accounts: Mapping[str, Target]) -> tuple[int, Headers, list[bytes]]:
    # Only a configured name is echoed; anything else could be a URL or a token.
    return _text(404, f"no account of that name (the accounts: {', '.join(accounts) or 'none'})")


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
    """ASGI application serving the accounts' metrics and the exporter's own.

    ``accounts`` gives the accounts being served at the moment of a request (a reload replaces
    them). Without a configuration file (``multi`` false) the one account is ``/metrics``, as a
    single-target exporter; with one, each account is ``/probe?target=NAME`` and ``/metrics``
    watches them all. ``reload`` is what ``POST /-/reload`` runs (``None``: the lifecycle API is
    off); it returns ``None`` on success, else the one-line problem.
    """

    def __init__(
        self,
        accounts: Callable[[], Mapping[str, Target]],
        process: CollectorRegistry,
        *,
        version: str,
        multi: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        auth: BasicAuth | None = None,
        reload: Callable[[], Awaitable[str | None]] | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._accounts = accounts
        self._multi = multi
        labelled = CollectorRegistry()
        labelled.register(LabelledAccounts(
            lambda: {name: account.metrics for name, account in self._accounts().items()}
        ))  # fmt: skip
        labelled.register(AccountScalars(
            lambda: {name: account.health().snapshot
                     for name, account in self._accounts().items()}
        ))  # fmt: skip
        # The process's metrics and the accounts' labelled ones change all the time: rendered
        # at every scrape.
        self._render_process: Rendering = partial(render_registry, process)
        self._render_labelled: Rendering = partial(render_registry, labelled)
        self._version = version
        self._reload = reload
        self._access = _Access.of(extra_headers, auth)
        self._log = logger or structlog.get_logger("exporter.web.app")
        self._routes: dict[str, tuple[Route, tuple[bytes, ...]]] = {
            "/": (self._landing, METHODS),
            "/metrics": (self._metrics, METHODS),
            "/probe": (self._probe, METHODS),
            "/healthz": (self._healthz, METHODS),
            "/readyz": (self._readyz, METHODS),
            "/-/reload": (self._reload_files, (b"POST", b"PUT")),
            "/-/poll": (self._poll_now, (b"POST", b"PUT")),
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
        found = self._routes.get(scope["path"])
        if found is None:
            status, headers, chunks = _text(404, "not found")
        elif method not in found[1]:
            status, headers, chunks = (
                405,
                [(b"content-type", PLAIN), (b"allow", b", ".join(found[1]))],
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
                status, headers, chunks = await found[0](scope)
            except Exception:
                self._log.exception("request failed", path=scope["path"])
                status, headers, chunks = _text(500, "internal error")
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
        accounts = self._accounts()
        if self._multi:
            for each in accounts.values():
                each.metrics.serving(each.health())  # evotic_up and counts as of now
            return await self._serve(scope, None, (self._render_labelled, self._render_process))
        account = accounts.get(DEFAULT_ACCOUNT)
        if account is None:  # stopping: nothing of the account to say
            return await self._serve(scope, None, (self._render_process,))
        return await self._serve(scope, scraped(account),
                                 (account.metrics.rendered, self._render_process))  # fmt: skip

    async def _probe(self, scope: Scope) -> tuple[int, Headers, list[bytes]]:
        targets = parse_qs(scope["query_string"].decode("latin-1")).get("target", [])
        if not targets:
            return _text(400, "missing parameter: ask for /probe?target=ACCOUNT")
        if len(targets) > 1:
            return _text(400, "parameter target given more than once")
        accounts = self._accounts()
        target = accounts.get(targets[0])
        if target is None:
            return _no_such_account(accounts)
        return await self._serve(scope, scraped(target), (target.metrics.rendered,))

    async def _serve(
        self, scope: Scope, view: View | None, parts: tuple[Rendering, ...]
    ) -> tuple[int, Headers, list[bytes]]:
        """An account's per-server exposition (if any) followed by ``parts``."""
        request = {k.lower(): v for k, v in scope["headers"]}
        fmt, gzip = negotiate(
            request.get(b"accept", b"").decode("latin-1"),
            request.get(b"accept-encoding", b"").decode("latin-1"),
        )
        own = _render(fmt, parts)
        headers: Headers = [
            (b"content-type", OPENMETRICS_TYPE if fmt == "openmetrics" else TEXT_TYPE),
            (b"vary", b"Accept, Accept-Encoding"),
            (b"cache-control", b"no-store"),
        ]
        if gzip:
            headers.append((b"content-encoding", b"gzip"))
            if view is None:
                stream = await asyncio.to_thread(compress_open, own)
                return 200, headers, [stream.head, stream.finish(b"")]
            stream = await view.exposition.compressed(fmt)
            return 200, headers, [stream.head, stream.finish(own)]
        if view is None:
            return 200, headers, [own]
        return 200, headers, [await view.exposition.body(fmt), own]

    async def _healthz(self, scope: Scope) -> tuple[int, Headers, list[bytes]]:
        stopped = [name for name, account in self._accounts().items() if not account.alive()]
        if not stopped:
            return _text(200, "ok")
        if self._multi:
            return _text(503, f"poll loop is not running for {', '.join(stopped)}")
        return _text(503, "poll loop is not running")

    async def _readyz(self, scope: Scope) -> tuple[int, Headers, list[bytes]]:
        health = {name: account.health() for name, account in self._accounts().items()}
        ready = bool(health) and all(h.ready for h in health.values())
        if not self._multi and DEFAULT_ACCOUNT in health:
            return _text(200 if ready else 503, health[DEFAULT_ACCOUNT].reason)
        lines = [f"{name}: {h.reason}" for name, h in health.items()] or ["no accounts"]
        return _text(200 if ready else 503, "\n".join(lines))

    async def _reload_files(self, scope: Scope) -> tuple[int, Headers, list[bytes]]:
        if self._reload is None:
            return _text(403, LIFECYCLE_OFF)
        problem = await self._reload()
        if problem is not None:
            return _text(500, f"reload failed: {problem}")
        return _text(200, "reloaded")

    async def _poll_now(self, scope: Scope) -> tuple[int, Headers, list[bytes]]:
        """Every account (or the one ``?target=`` names) polls at once, its back-off reset."""
        if self._reload is None:  # the lifecycle API is on exactly when reloads are
            return _text(403, LIFECYCLE_OFF)
        accounts = self._accounts()
        targets = parse_qs(scope["query_string"].decode("latin-1")).get("target")
        if targets is not None and (len(targets) > 1 or targets[0] not in accounts):
            return _no_such_account(accounts)
        names = targets or list(accounts)
        for name in names:
            accounts[name].poll_now()
        return _text(202, f"polling {', '.join(names)}")

    async def _landing(self, scope: Scope) -> tuple[int, Headers, list[bytes]]:
        version = html.escape(self._version)
        rows = "".join(self._row(name, account) for name, account in self._accounts().items())
        watch = ("every account's health" if self._multi
                 else "the servers of the account and the exporter's health")  # fmt: skip
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evotic exporter</title>
<style>table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:2px 8px;\
text-align:left}}</style></head>
<body>
<h1>Evotic exporter</h1>
<p>Version {version}. Prometheus metrics for servers hosted at Evotic.</p>
<ul>
<li><a href="metrics">metrics</a> ({watch})</li>
<li><a href="healthz">healthz</a> (the process and its poll loops are alive)</li>
<li><a href="readyz">readyz</a> (a recent successful poll is being served)</li>
</ul>
<h2>Accounts</h2>
<p>Each account's servers and health, as Prometheus scrapes them with
<code>/probe?target=NAME</code>:</p>
<table>
<tr><th>account</th><th>ready</th><th>servers</th><th>data age</th><th>last poll</th>\
<th>rate limit</th></tr>
{rows}</table>
</body></html>
"""
        return 200, [(b"content-type", b"text/html; charset=utf-8")], [page.encode()]

    def _row(self, name: str, account: Target) -> str:
        try:
            return _account_row(name, account.status())
        except Exception:
            # The page still links the account, whose probe and /readyz will say more.
            self._log.exception("account state unavailable", account=name)
            return _account_row(name, None)


def _account_row(name: str, status: Status | None) -> str:
    """One account's row of the landing page: every value escaped, none of them a secret."""
    link = f'<a href="probe?target={quote(name)}">{html.escape(name)}</a>'
    if status is None:
        return f'<tr><td>{link}</td><td colspan="5">state unavailable</td></tr>\n'
    health = status.health
    ready = "yes" if health.ready else f"no: {health.reason}"
    age = "—" if status.age is None else f"{status.age:.0f} s"
    last = "ok" if status.last_error is None else f"failed: {status.last_error}"
    if status.rate is None:
        rate = "not stated by the API"
    else:
        limit, remaining = status.rate
        rate = f"{remaining} of {limit} left"
    texts = (ready, str(health.servers), age, last, rate)
    cells = [link, *(html.escape(text) for text in texts)]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>\n"
