"""The Evotic API client: one long-lived httpx client, one retry policy, typed answers.

This client is the only place that retries. httpx's transport retries nothing here; the poller
never retries a failed request itself. A poll deadline around the calls bounds the total.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from exporter.api.causes import connection_cause
from exporter.api.errors import (
    ApiConnectionError,
    ApiStatusError,
    ApiTimeoutError,
    EvoticError,
    InvalidResponseError,
    RateLimitedError,
)
from exporter.api.models import (
    LISTING,
    RAW_LISTING,
    SERVER,
    SERVER_STATUS,
    Page,
    RawPage,
    Server,
    ServerStatus,
)
from exporter.api.network import ApiRoute
from exporter.api.ratelimit import RateBudget
from exporter.runtime.worker import Offload

ENDPOINT_SERVERS = "servers"
ENDPOINT_STATUS = "server_status"

# A listed server is about 650 bytes of JSON: one answer of 64 MiB holds some 100,000
# servers, more than any real account; a paginated API sends far less per answer.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_PAGES = 10_000
PAGE_CONCURRENCY = 4


class RequestObserver(Protocol):
    """Told once about every HTTP request the client makes (``evotic_api_requests_total``).

    ``code`` is the answer's status code once its status line has come, even if the body
    is then cut off, too large or too slow; ``timeout`` when no status came in time (the
    request timeout, or the poll's deadline cancelling the request); ``connection`` when
    none came for any other reason.
    """

    def __call__(self, endpoint: str, code: str, seconds: float) -> None: ...


def _ignore_request(endpoint: str, code: str, seconds: float) -> None:
    return None


# The monotonic time by which the current poll (or status sweep) must be done. A context
# variable, because the poll and the status sweep share one client in separate tasks.
_DEADLINE: ContextVar[float | None] = ContextVar("evotic_deadline", default=None)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before asking again within one poll.

    5xx, connection errors and timeouts are retried with capped exponential back-off and full
    jitter. 401/403 and other 4xx are final for the poll. A 429 is never retried within the
    poll: its ``Retry-After`` (capped) holds back every request until it has passed.
    """

    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    retry_after_cap: float = 900.0
    retry_after_default: float = 60.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform between 0 and the capped exponential for this attempt."""
        return rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2.0**attempt))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class Rejected:
    """A listed record that failed validation: where, and why, never the value itself."""

    server_id: str | None
    errors: tuple[str, ...]


@dataclass(frozen=True)
class Listing:
    """Every valid server of every page, the records set aside, and where the time went."""

    servers: tuple[Server, ...]
    rejected: tuple[Rejected, ...] = ()
    pages: int = 1
    fetch_seconds: float = 0.0
    validate_seconds: float = 0.0


@dataclass
class _PageResult:
    servers: list[Server]
    rejected: list[Rejected]
    next_url: str | None
    last_page: int | None
    validate_seconds: float


def _describe(errors: Sequence[ErrorDetails]) -> tuple[str, ...]:
    return tuple(
        f"{'.'.join(str(part) for part in error['loc']) or '<record>'}: {error['msg']}"
        for error in errors[:3]
    )


def _record_id(record: Any) -> str | None:
    if isinstance(record, dict):
        raw = record.get("id")
        if isinstance(raw, (int, str)) and not isinstance(raw, bool):
            return str(raw)[:64]
    return None


def parse_listing_page(body: bytes) -> _PageResult:
    """Validate one page of the listing straight from its JSON bytes.

    The fast path validates the whole page at once. Only when it fails is the page parsed raw,
    so that each bad record can be set aside with the reason while the good ones are kept.
    ``validate_seconds`` is this thread's CPU time: pages are validated in worker threads
    while others are still being fetched, and wall time would count the waits for the GIL.
    """
    started = time.thread_time()
    typed: list[Server] | Page
    rejected: list[Rejected] = []
    try:
        typed = LISTING.validate_json(body)
        servers = typed if isinstance(typed, list) else typed.data
        links, meta = (None, None) if isinstance(typed, list) else (typed.links, typed.meta)
    except ValidationError:
        try:
            raw = RAW_LISTING.validate_json(body)
        except ValidationError as error:
            raise InvalidResponseError(
                "listing is not a JSON array of servers nor a paginated object: "
                + "; ".join(_describe(error.errors(include_input=False, include_url=False)))
            ) from None
        records = raw if isinstance(raw, list) else raw.data
        links, meta = (None, None) if not isinstance(raw, RawPage) else (raw.links, raw.meta)
        servers = []
        for record in records:
            try:
                servers.append(SERVER.validate_python(record))
            except ValidationError as error:
                detail = _describe(error.errors(include_input=False, include_url=False))
                rejected.append(Rejected(_record_id(record), detail))
    return _PageResult(
        servers=servers,
        rejected=rejected,
        next_url=links.next if links else None,
        last_page=meta.last_page if meta else None,
        validate_seconds=time.thread_time() - started,
    )


def _page_url(url: str, page: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "page"]
    query.append(("page", str(page)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _has_page_param(url: str) -> bool:
    return any(k == "page" for k, _ in parse_qsl(urlsplit(url).query))


class EvoticClient:
    """Async client for one Evotic account.

    ``token`` is asked for the current token before every request, so a token file re-read by
    the poller takes effect at once. The token goes in the ``Authorization`` header only, and
    only to the configured API origin: redirects are refused and a ``links.next`` pointing
    elsewhere is an invalid response. ``route`` says whom to trust and which proxy to use;
    a proxy is refused for an ``http://`` API, where it would read the token in clear.
    ``offload`` runs the validation of each page, away from the event loop.
    """

    def __init__(
        self,
        base_url: str,
        token: Callable[[], str],
        *,
        timeout: float,
        user_agent: str,
        retry: RetryPolicy = RetryPolicy(),
        observe: RequestObserver = _ignore_request,
        auth_origin: str = "the configured token",
        route: ApiRoute | None = None,
        budget: RateBudget | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        offload: Offload = asyncio.to_thread,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._offload = offload
        self.base_url = self._base
        self._origin = urlsplit(self._base)[:2]
        self._token = token
        self._auth_origin = auth_origin
        self._retry = retry
        self._observe = observe
        self._max_bytes = max_response_bytes
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        # The rate limit the API states, and a 429's hold: shared by the accounts of a token.
        self.budget = budget if budget is not None else RateBudget(monotonic=monotonic)
        proxy = route.proxy if route is not None else None
        if proxy is not None and urlsplit(self._base).scheme != "https":
            raise ValueError("a proxy would read the token in clear: only an https API URL "
                             "goes through one")  # fmt: skip
        # Said after a connection error, so that a proxy's failure is not taken for the API's.
        self._via = f" via the proxy {proxy.origin}" if proxy is not None else ""
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            follow_redirects=False,
            transport=transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            # The environment is read once, by the composition root, into ``route``.
            trust_env=False,
            verify=route.tls if route is not None else True,
            proxy=proxy.url if proxy is not None else None,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Within this block no retry is started that could not finish in ``seconds``.

        The caller still bounds the block with ``asyncio.timeout``; this makes a poll that
        runs out of time report the error it was retrying rather than a timeout.
        """
        token = _DEADLINE.set(self._monotonic() + seconds)
        try:
            yield
        finally:
            _DEADLINE.reset(token)

    @property
    def held_for(self) -> float:
        """Seconds until a previous 429 allows the next request (0 when none is pending)."""
        return self.budget.held_for

    async def list_servers(self) -> Listing:
        """Fetch every page of ``GET /servers``.

        Once the first page says how many pages there are (``meta.last_page``) and its
        ``links.next`` numbers pages, the rest are fetched concurrently; otherwise
        ``links.next`` is followed one page at a time until it is null.
        """
        started = time.perf_counter()
        first_url = f"{self._base}/servers"
        first = await self._parse(await self._get(first_url, ENDPOINT_SERVERS))
        results = [first]
        if first.next_url and first.last_page and _has_page_param(first.next_url):
            self._check_origin(first.next_url)
            limit = asyncio.Semaphore(PAGE_CONCURRENCY)
            last = min(first.last_page, MAX_PAGES)

            async def fetch(page: int) -> _PageResult:
                async with limit:
                    body = await self._get(_page_url(first.next_url or "", page), ENDPOINT_SERVERS)
                return await self._parse(body)

            results += await asyncio.gather(*(fetch(page) for page in range(2, last + 1)))
        else:
            seen = {first_url}
            next_url = first.next_url
            while next_url:
                self._check_origin(next_url)
                if next_url in seen or len(seen) >= MAX_PAGES:
                    raise InvalidResponseError("listing pagination loops or never ends")
                seen.add(next_url)
                page = await self._parse(await self._get(next_url, ENDPOINT_SERVERS))
                results.append(page)
                next_url = page.next_url
        validate_seconds = sum(result.validate_seconds for result in results)
        return _merge(results, time.perf_counter() - started - validate_seconds, validate_seconds)

    async def _parse(self, body: bytes) -> _PageResult:
        # Validation is CPU work: off the event loop, so scrapes are served meanwhile.
        return await self._offload(parse_listing_page, body)

    async def server_status(self, server_id: str) -> ServerStatus:
        """``GET /servers/{id}/status`` (the documentation misprints this URL)."""
        body = await self._get(f"{self._base}/servers/{server_id}/status", ENDPOINT_STATUS)
        try:
            return SERVER_STATUS.validate_json(body)
        except ValidationError as error:
            raise InvalidResponseError(
                "status answer is not valid: "
                + "; ".join(_describe(error.errors(include_input=False, include_url=False)))
            ) from None

    def _check_origin(self, url: str) -> None:
        if urlsplit(url)[:2] != self._origin:
            raise InvalidResponseError(
                "listing links to another origin; not sending the token there"
            )

    async def _get(self, url: str, endpoint: str) -> bytes:
        attempt = 0
        while True:
            try:
                return await self._get_once(url, endpoint)
            except (ApiConnectionError, ApiStatusError) as error:
                retryable = isinstance(error, ApiConnectionError) or (
                    error.reason == "server_error"
                )
                attempt += 1
                if not retryable or attempt >= self._retry.max_attempts:
                    raise
                pause = self._retry.backoff(attempt, self._rng)
                deadline = _DEADLINE.get()
                if deadline is not None and self._monotonic() + pause >= deadline:
                    raise
                await self._sleep(pause)

    async def _get_once(self, url: str, endpoint: str) -> bytes:
        waiting = self.held_for
        if waiting > 0:
            raise RateLimitedError(
                f"rate limited: holding requests for another {math.ceil(waiting)} s", waiting
            )
        headers = {"Authorization": f"Bearer {self._token()}"}
        started = time.perf_counter()
        # Counted exactly once, in ``finally``: the status once it has come, else why not.
        status: int | None = None
        no_answer = "connection"
        try:
            async with self._http.stream("GET", url, headers=headers) as response:
                status = response.status_code
                self.budget.observe(response.headers)
                if status != 200:
                    self._raise_for_status(response)
                return await self._read_body(response, endpoint)
        except httpx.TimeoutException as error:
            no_answer = "timeout"
            waited = "no connection" if isinstance(error, httpx.ConnectTimeout) else "no answer"
            raise ApiTimeoutError(endpoint, f"{waited} within the timeout{self._via}") from None
        except httpx.TransportError as error:
            raise ApiConnectionError(endpoint, connection_cause(error) + self._via) from None
        except asyncio.CancelledError:
            # Only the poll's deadline cancels a request, or the shutdown, when the server no
            # longer answers scrapes: either way no answer came in the time it had.
            no_answer = "timeout"
            raise
        finally:
            code = no_answer if status is None else str(status)
            self._observe(endpoint, code, time.perf_counter() - started)

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            if retry_after is None:
                retry_after = self._retry.retry_after_default
            retry_after = min(retry_after, self._retry.retry_after_cap)
            self.budget.hold(retry_after)
            raise RateLimitedError(
                f"HTTP 429: rate limited, the API asks to wait {math.ceil(retry_after)} s",
                retry_after,
            )
        if 300 <= status < 400:
            raise InvalidResponseError(f"HTTP {status}: redirect refused")
        explanation = {
            401: f"token rejected (from {self._auth_origin})",
            403: f"token not allowed (from {self._auth_origin})",
        }.get(status, "")
        suffix = f": {explanation}" if explanation else ""
        raise ApiStatusError(f"HTTP {status}{suffix}", status)

    async def _read_body(self, response: httpx.Response, endpoint: str) -> bytes:
        """The whole body of a 200, at most ``max_response_bytes``.

        A body cut off before its end (the connection closed or reset short of its
        ``Content-Length`` or last chunk) is an invalid response, as is one that cannot be
        decoded: the API did answer, and asking again the same poll is not the fix. A body
        that stops coming for longer than the timeout is a timeout, retried like one.
        """
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise InvalidResponseError(f"answer larger than {self._max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise InvalidResponseError(f"answer larger than {self._max_bytes} bytes")
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise ApiTimeoutError(endpoint, f"the answer stalled for longer than the timeout"
                                  f"{self._via}") from None  # fmt: skip
        except httpx.DecodingError:
            raise InvalidResponseError(
                f"{endpoint}: the answer cannot be decoded as its Content-Encoding says"
            ) from None
        except httpx.TransportError:
            received = response.num_bytes_downloaded
            expected = f" of {declared}" if declared.isdigit() else ""
            raise InvalidResponseError(
                f"{endpoint}: the answer was cut off after {received}{expected} bytes"
            ) from None
        return b"".join(chunks)


def _merge(results: list[_PageResult], fetch_seconds: float, validate_seconds: float) -> Listing:
    """Join pages; a server id listed twice keeps its first record, the rest are set aside.

    Raises ``InvalidResponseError`` when half or more of the records were set aside.
    """
    servers: list[Server] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for result in results:
        rejected += result.rejected
        for server in result.servers:
            if server.id in seen:
                rejected.append(Rejected(server.id, ("id: listed more than once",)))
                continue
            seen.add(server.id)
            servers.append(server)
    # A few bad records are set aside; when most are bad the answer as a whole is broken,
    # and serving what is left would make most of the fleet seem deleted.
    if rejected and len(rejected) * 2 >= len(servers) + len(rejected):
        raise InvalidResponseError(
            f"{len(rejected)} of {len(servers) + len(rejected)} listed servers failed "
            f"validation, e.g. " + "; ".join(rejected[0].errors)
        )
    return Listing(
        servers=tuple(servers),
        rejected=tuple(rejected),
        pages=len(results),
        fetch_seconds=max(0.0, fetch_seconds),
        validate_seconds=validate_seconds,
    )


__all__ = [
    "ENDPOINT_SERVERS",
    "ENDPOINT_STATUS",
    "EvoticClient",
    "EvoticError",
    "Listing",
    "Rejected",
    "RetryPolicy",
    "parse_listing_page",
    "parse_retry_after",
]
