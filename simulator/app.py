"""The simulated Evotic API as a raw ASGI 3 application, with control endpoints for tests.

API routes (bearer token required), under ``base_url_path``:
``GET /servers``, ``GET /servers/{id}``, ``GET /servers/{id}/status``.

Control routes (no token; see ``control.py``), under ``/_simulator``: ``GET state``,
``GET|POST|DELETE faults``, ``DELETE faults/{id}``, ``GET stats``, ``POST stats/reset``,
``POST servers``, ``PATCH|DELETE servers/{id}``.

Every answer, including a malformed control request, is a JSON (or deliberately broken) HTTP
response: nothing raises out of the ASGI call.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final
from urllib.parse import parse_qs

from exporter.web.server import Receive, Scope, Send
from simulator.control import CONTROL_PREFIX, ControlApi, RequestStats
from simulator.faults import Endpoint, FaultContext, FaultSet
from simulator.fleet import Fleet, UnknownServerError
from simulator.messages import (
    Reply,
    Request,
    json_body,
    json_reply,
    message_reply,
    parse_id,
    raw_json_reply,
)
from simulator.ratelimit import RateLimiter
from simulator.servers import Clock

Sleep = Callable[[float], Awaitable[None]]

MAX_PER_PAGE: Final = 1000
API_METHODS: Final = ("GET", "HEAD")


class SimulatorApp:
    """The Evotic API over ``fleet``, misbehaving as ``faults`` say, as an ASGI 3 application.

    ``paginate`` answers the listing page by page even when the client asks for no page (with
    ``page`` or ``per_page`` in the query it always does); ``latency`` delays every API answer.
    Pagination links use ``public_url`` when given, else the request's Host header.
    """

    def __init__(
        self,
        fleet: Fleet,
        faults: FaultSet,
        token: str,
        base_url_path: str = "/api/v1",
        *,
        paginate: bool = False,
        per_page: int = 100,
        latency: float = 0.0,
        rate_limit: RateLimiter | None = None,
        public_url: str | None = None,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        logger: logging.Logger | None = None,
    ) -> None:
        if not token:
            raise ValueError("the simulator needs a non-empty token")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}")
        if not 0 <= latency < math.inf:
            raise ValueError("latency must be a non-negative number of seconds")
        self.fleet = fleet
        self.faults = faults
        self.stats = RequestStats()
        self._token = token.encode()
        self._base = "/" + base_url_path.strip("/") if base_url_path.strip("/") else ""
        self._paginate = paginate
        self._per_page = per_page
        self._latency = latency
        self._rate_limit = rate_limit
        self._public_url = public_url.rstrip("/") if public_url else None
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._log = logger or logging.getLogger(__name__)
        self._control = ControlApi(fleet, faults, self.stats, self._log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = str(scope.get("path", "")), str(scope.get("method", ""))
        is_api = not _under(path, CONTROL_PREFIX)
        try:
            request = Request.from_scope(scope, receive)
            reply = await (self._api(request) if is_api else self._control.handle(request))
        except Exception:
            self._log.exception("simulator request failed: %s %s", method, path)
            reply = message_reply(500, "Server Error")
        if is_api:
            self.stats.answered(reply.status)
        try:
            await _send_reply(send, reply, head_only=method.upper() == "HEAD")
        except Exception as error:  # the client went away, or a stream broke mid-way
            self._log.debug("could not send the reply: %r", error)

    # -- the API -------------------------------------------------------------------------------

    async def _api(self, request: Request) -> Reply:
        if self._rate_limit is None:
            return await self._api_unlimited(request)
        decision = self._rate_limit.take()
        if not decision.allowed:
            return message_reply(429, "Too Many Attempts.", decision.headers)
        reply = await self._api_unlimited(request)
        return replace(reply, headers=(*reply.headers, *decision.headers))

    async def _api_unlimited(self, request: Request) -> Reply:
        endpoint, server_id = self._route(request.path)
        self.stats.count(endpoint)
        if endpoint is Endpoint.OTHER:
            route = request.path.lstrip("/")
            return message_reply(404, f"The route {route} could not be found.")
        if request.method not in API_METHODS:
            allowed = ", ".join(API_METHODS)
            message = (
                f"The {request.method} method is not supported for route "
                f"{request.path.lstrip('/')}. Supported methods: {allowed}."
            )
            return message_reply(405, message, (("allow", allowed),))
        if not self._authorized(request):
            return message_reply(401, "Unauthenticated.")
        hit = self.faults.hit(endpoint)
        delay = self._latency + hit.delay
        if delay > 0:
            await self._sleep(delay)

        def normal() -> Reply:
            return self._answer(endpoint, server_id, request)

        if hit.reply is None or hit.reply.kind.reply is None:
            return normal()
        context = FaultContext(
            endpoint=endpoint,
            path=request.path,
            query=request.query,
            port=request.port,
            now=self._wall_clock(),
            normal=normal,
        )
        return hit.reply.kind.reply(hit.reply, context)

    def _route(self, path: str) -> tuple[Endpoint, int | None]:
        if not _under(path, self._base):
            return Endpoint.OTHER, None
        parts = path[len(self._base) :].split("/")[1:]
        if parts == ["servers"]:
            return Endpoint.SERVERS, None
        if len(parts) in (2, 3) and parts[0] == "servers" and parts[1]:
            server_id = parse_id(parts[1])
            if len(parts) == 2:
                return Endpoint.SERVER, server_id
            if parts[2] == "status":
                return Endpoint.STATUS, server_id
        return Endpoint.OTHER, None

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        presented = token.strip().encode("latin-1")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented, self._token)

    def _answer(self, endpoint: Endpoint, server_id: int | None, request: Request) -> Reply:
        if endpoint is Endpoint.SERVERS:
            query = parse_qs(request.query)
            if self._paginate or "page" in query or "per_page" in query:
                return self._page(request, query)
            return raw_json_reply(200, self.fleet.listing_json())
        try:
            if server_id is None:
                raise UnknownServerError(0)
            if endpoint is Endpoint.SERVER:
                return json_reply(200, self.fleet.server(server_id))
            return json_reply(200, self.fleet.status(server_id))
        except UnknownServerError:
            return message_reply(404, "Server not found")

    def _page(self, request: Request, query: dict[str, list[str]]) -> Reply:
        """One page of the listing in Laravel's paginator shape."""
        per_page = min(MAX_PER_PAGE, max(1, _query_int(query, "per_page", self._per_page)))
        page = max(1, _query_int(query, "page", 1))
        total = len(self.fleet)
        last_page = max(1, math.ceil(total / per_page))
        offset = (page - 1) * per_page
        shown = max(0, min(per_page, total - offset))
        url = f"{self._public_base(request)}/servers"

        def link(number: int) -> str:
            return f"{url}?page={number}&per_page={per_page}"

        links = {
            "first": link(1),
            "last": link(last_page),
            "prev": link(page - 1) if page > 1 else None,
            "next": link(page + 1) if page < last_page else None,
        }
        meta = {
            "current_page": page,
            "from": offset + 1 if shown else None,
            "last_page": last_page,
            "path": url,
            "per_page": per_page,
            "to": offset + shown if shown else None,
            "total": total,
        }
        data = self.fleet.listing_json(offset, per_page)
        body = b"".join(
            (b'{"data":', data, b',"links":', json_body(links), b',"meta":', json_body(meta), b"}")
        )
        return raw_json_reply(200, body)

    def _public_base(self, request: Request) -> str:
        if self._public_url is not None:
            return self._public_url
        host = request.headers.get("host") or f"127.0.0.1:{request.port}"
        return f"{request.scheme}://{host}{self._base}"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _query_int(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    text = values[-1].strip()
    return int(text) if text.lstrip("-").isdecimal() and len(text) <= 18 else default


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to set up or tear down, but a server that runs lifespan must hear back.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send_reply(send: Send, reply: Reply, *, head_only: bool) -> None:
    headers = [(name.encode("latin-1"), value.encode()) for name, value in reply.headers]
    if reply.stream is None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    if head_only:
        await send({"type": "http.response.body", "body": b""})
    elif reply.stream is None:
        await send({"type": "http.response.body", "body": reply.body})
    else:
        async for chunk in reply.stream():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
