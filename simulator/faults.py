"""Misbehaviour the simulated API can be switched to at run time, to test the exporter's resilience.

A fault has a kind (one row of ``FAULT_KINDS``), a scope (which endpoints it hits), an optional
count (it switches itself off after that many hits) and kind-specific parameters. Delay kinds
(``timeout``, ``latency``) stack with everything else; of the kinds that replace the answer, the
oldest matching fault wins. Adding a kind is one ``FaultKind`` row plus, usually, one function.
"""

from __future__ import annotations

import copy
import http
import math
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from simulator.messages import (
    JSON_TYPE,
    Reply,
    html_reply,
    json_body,
    json_reply,
    message_reply,
    raw_json_reply,
)

ParamValue = bool | int | float | str


class Endpoint(StrEnum):
    """What an API request asked for."""

    SERVERS = "servers"
    """The listing, ``GET /servers``."""
    SERVER = "server"
    """One server, ``GET /servers/{id}``."""
    STATUS = "status"
    """``GET /servers/{id}/status``."""
    OTHER = "other"
    """Anything else; faults never apply to it."""


class Scope(StrEnum):
    """Which endpoints a fault applies to."""

    SERVERS = "servers"
    SERVER = "server"
    STATUS = "status"
    ALL = "all"

    def covers(self, endpoint: Endpoint) -> bool:
        if endpoint is Endpoint.OTHER:
            return False
        return self is Scope.ALL or self.value == endpoint.value


class FaultError(ValueError):
    """A fault request that cannot be honoured; the message says why."""


@dataclass(frozen=True)
class Param:
    """One parameter of a fault kind, with its type, default and allowed range."""

    name: str
    kind: type[bool] | type[int] | type[float] | type[str]
    default: ParamValue | None
    minimum: float | None = None
    maximum: float | None = None

    def parse(self, value: object) -> ParamValue | None:
        if value is None and self.default is None:
            return None
        if self.kind is bool and isinstance(value, bool):
            return value
        if self.kind is str and isinstance(value, str) and 0 < len(value) <= 2048:
            # Parameters can end up in headers, where a line break would split the response.
            if not value.isprintable():
                raise FaultError(f"parameter {self.name!r} must be printable text")
            return value
        # bool is a subclass of int, but true is no status code.
        if (
            self.kind in (int, float)
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            if self.kind is int and not isinstance(value, int):
                raise FaultError(f"parameter {self.name!r} must be an integer")
            if not math.isfinite(value):
                raise FaultError(f"parameter {self.name!r} must be finite")
            if self.minimum is not None and value < self.minimum:
                raise FaultError(f"parameter {self.name!r} must be at least {self.minimum:g}")
            if self.maximum is not None and value > self.maximum:
                raise FaultError(f"parameter {self.name!r} must be at most {self.maximum:g}")
            return float(value) if self.kind is float else value
        expected = {bool: "true or false", int: "an integer", float: "a number"}.get(
            self.kind, "a string"
        )
        raise FaultError(f"parameter {self.name!r} must be {expected}")


@dataclass(frozen=True)
class FaultContext:
    """What a reply builder may need to know about the request it spoils."""

    endpoint: Endpoint
    path: str
    query: str
    port: int
    now: float
    """Wall-clock Unix seconds, for HTTP dates the client compares with its own clock."""
    normal: Callable[[], Reply]
    """The answer the API would have given without the fault."""


ReplyBuilder = Callable[["Fault", FaultContext], Reply]
DelayRule = Callable[["Fault", random.Random], float]


@dataclass(frozen=True)
class FaultKind:
    """One row of the fault table: a name, its parameters, and what it does."""

    name: str
    summary: str
    params: tuple[Param, ...] = ()
    reply: ReplyBuilder | None = None
    delay: DelayRule | None = None


@dataclass
class Fault:
    """One active fault."""

    id: int
    kind: FaultKind
    scope: Scope
    remaining: int | None
    """Hits left before it switches itself off; ``None`` means until cleared."""
    params: Mapping[str, ParamValue | None] = field(default_factory=dict)

    def number(self, name: str) -> float:
        value = self.params[name]
        if not isinstance(value, int | float):
            raise TypeError(f"{self.kind.name} parameter {name!r} is not a number")
        return float(value)

    def flag(self, name: str) -> bool:
        return self.params[name] is True

    def text(self, name: str) -> str | None:
        value = self.params[name]
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.name,
            "scope": self.scope.value,
            "count": self.remaining,
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class Hit:
    """What the active faults do to one request: wait this long, then maybe answer differently."""

    delay: float = 0.0
    reply: Fault | None = None
    faults: tuple[Fault, ...] = ()


class FaultSet:
    """The faults currently switched on, in the order they were added."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._faults: list[Fault] = []
        self._next_id = 1
        self._rng = rng if rng is not None else random.Random(0)

    def add(
        self, kind: str, scope: str = "all", count: int | None = None, **params: object
    ) -> Fault:
        """Switch a fault on; raises ``FaultError`` when the kind, scope or a parameter is bad."""
        fault_kind = FAULT_KINDS.get(kind)
        if fault_kind is None:
            raise FaultError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        try:
            fault_scope = Scope(scope)
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise FaultError(f"unknown scope {scope!r}; known: {known}") from None
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or count < 1
        ):
            raise FaultError("count must be a positive integer or null")
        specs = {param.name: param for param in fault_kind.params}
        unknown = sorted(set(params) - set(specs))
        if unknown:
            raise FaultError(f"{kind} takes no parameter {', '.join(map(repr, unknown))}")
        values = {
            name: spec.parse(params[name]) if name in params else spec.default
            for name, spec in specs.items()
        }
        fault = Fault(self._next_id, fault_kind, fault_scope, count, values)
        self._next_id += 1
        self._faults.append(fault)
        return fault

    def add_from_json(self, body: object) -> Fault:
        """``{"kind", "scope", "count", "params": {...}}``; parameters may also sit at top level."""
        if not isinstance(body, dict):
            raise FaultError("expected a JSON object")
        fields = dict(body)
        kind = fields.pop("kind", None)
        scope = fields.pop("scope", "all")
        count = fields.pop("count", None)
        nested = fields.pop("params", {})
        if not isinstance(kind, str):
            raise FaultError("'kind' is required and must be a string")
        if not isinstance(scope, str):
            raise FaultError("'scope' must be a string")
        if not isinstance(nested, dict):
            raise FaultError("'params' must be an object")
        clashes = sorted(set(nested) & (set(fields) | {"kind", "scope", "count"}))
        if clashes:
            raise FaultError(f"parameter given twice: {', '.join(clashes)}")
        return self.add(kind, scope, count, **nested, **fields)

    def remove(self, fault_id: int) -> bool:
        before = len(self._faults)
        self._faults = [fault for fault in self._faults if fault.id != fault_id]
        return len(self._faults) != before

    def clear(self) -> int:
        cleared = len(self._faults)
        self._faults.clear()
        return cleared

    def active(self) -> list[Fault]:
        return list(self._faults)

    def hit(self, endpoint: Endpoint) -> Hit:
        """Apply the faults to one request to ``endpoint``, using up their counts."""
        delay = 0.0
        reply: Fault | None = None
        used = []
        for fault in self._faults:
            if not fault.scope.covers(endpoint):
                continue
            if fault.kind.delay is not None:
                delay += fault.kind.delay(fault, self._rng)
            elif reply is None:
                reply = fault
            else:
                continue
            used.append(fault)
        for fault in used:
            if fault.remaining is not None:
                fault.remaining -= 1
        self._faults = [fault for fault in self._faults if fault.remaining != 0]
        return Hit(delay, reply, tuple(used))


# -- what each kind does ---------------------------------------------------------------------

PROXY_PAGE = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
MAINTENANCE_PAGE = (
    '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
    "<title>Evotic - Maintenance</title></head>\n<body>\n<h1>We'll be right back</h1>\n"
    "<p>Evotic is being updated. Please try again in a few minutes.</p>\n</body>\n</html>\n"
)
NUMBER_WORDS = {1: "one", 2: "two", 4: "four", 8: "eight", 16: "sixteen", 32: "thirty-two"}


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Server Error"


def _server_error(fault: Fault, ctx: FaultContext) -> Reply:
    status = int(fault.number("status"))
    if status in (502, 504):
        # These come from the proxy in front of the API, which answers in HTML.
        return html_reply(status, PROXY_PAGE.format(status=status, phrase=_phrase(status)))
    return message_reply(status, "Server Error" if status == 500 else _phrase(status))


def _rate_limited(fault: Fault, ctx: FaultContext) -> Reply:
    seconds = int(fault.number("retry_after"))
    if fault.flag("http_date"):
        retry_after = formatdate(ctx.now + seconds, usegmt=True)
    else:
        retry_after = str(seconds)
    headers = (
        ("retry-after", retry_after),
        ("x-ratelimit-limit", "60"),
        ("x-ratelimit-remaining", "0"),
    )
    return message_reply(429, "Too Many Attempts.", headers)


def _malformed_json(fault: Fault, ctx: FaultContext) -> Reply:
    body = ctx.normal().body
    broken = body.replace(b",", b",,", 1) if b"," in body else body + b"}"
    return raw_json_reply(200, broken)


def _truncated_json(fault: Fault, ctx: FaultContext) -> Reply:
    body = ctx.normal().body
    return raw_json_reply(200, body[: len(body) // 2])


def _redirect_other_host(fault: Fault, ctx: FaultContext) -> Reply:
    location = fault.text("location")
    if location is None:
        target = f"{ctx.path}?{ctx.query}" if ctx.query else ctx.path
        location = f"http://127.0.0.2:{ctx.port}{target}"
    page = f'<html><body>Redirecting to <a href="{location}">{location}</a>.</body></html>'
    return html_reply(302, page, (("location", location),))


def _huge_response(fault: Fault, ctx: FaultContext) -> Reply:
    total = int(fault.number("megabytes") * 1024 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        sent = 1
        yield b"["
        while sent + len(HUGE_BLOCK) < total:
            yield HUGE_BLOCK + b","
            sent += len(HUGE_BLOCK) + 1
        yield HUGE_BLOCK + b"]"

    return Reply(200, (("content-type", JSON_TYPE),), stream=chunks)


def _servers_in(payload: Any) -> list[dict[str, Any]]:
    """The server objects inside a listing, a page of one, or a single server."""
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        payload = payload["data"]
    if isinstance(payload, list):
        return [server for server in payload if isinstance(server, dict)]
    if isinstance(payload, dict) and "hostname" in payload:
        return [payload]
    return []


def _rewriting(rewrite: Callable[[Any, Endpoint], None]) -> ReplyBuilder:
    """A reply builder that edits the normal JSON answer in place."""

    def build(fault: Fault, ctx: FaultContext) -> Reply:
        normal = ctx.normal()
        if normal.status != 200 or normal.content_type != JSON_TYPE:
            return normal
        payload = normal.json()
        rewrite(payload, ctx.endpoint)
        return json_reply(200, payload)

    return build


def _wrong_types(payload: Any, endpoint: Endpoint) -> None:
    if endpoint is Endpoint.STATUS:
        payload.update(status=1, is_processing="false", progress=f"{payload.get('progress', 0)}%")
        return
    for index, server in enumerate(_servers_in(payload)):
        specs = server.get("specifications") or {}
        cores = specs.get("cpu", 4)
        specs["cpu"] = NUMBER_WORDS.get(cores, str(cores))
        usage = server.get("usage")
        if isinstance(usage, dict):
            usage["traffic"] = list(usage["traffic"].values())
            usage["ram"] = f"{usage['ram']} MB"
        # A different extra oddity per server, so a client meets each one.
        match index % 3:
            case 0:
                server["id"] = str(server["id"])
            case 1:
                server["ip_addresses"] = {"0": server["ip_addresses"]}
            case _:
                server["created_at"] = 1699035782


def _missing_fields(payload: Any, endpoint: Endpoint) -> None:
    if endpoint is Endpoint.STATUS:
        payload.pop("status", None)
        return
    for index, server in enumerate(_servers_in(payload)):
        # Every third server stays whole, so a client can still use part of the answer.
        if index % 3 == 0:
            server.pop("id", None)
        elif index % 3 == 1:
            server.pop("hostname", None)


def _duplicate_ids(payload: Any, endpoint: Endpoint) -> None:
    if endpoint is not Endpoint.SERVERS:
        return
    servers = payload["data"] if isinstance(payload, dict) else payload
    twins = []
    for server in servers[::4]:
        twin = copy.deepcopy(server)
        twin["hostname"] = f"{twin.get('hostname', 'server')}-twin"
        twin["status"] = "stopped" if twin.get("status") == "started" else "started"
        if isinstance(twin.get("usage"), dict):
            for counter in twin["usage"]["traffic"].values():
                counter["value"] = counter["value"] // 2 + 12345
        twins.append(twin)
    servers.extend(twins)


def _absurd_values(payload: Any, endpoint: Endpoint) -> None:
    if endpoint is Endpoint.STATUS:
        payload["progress"] = math.nan
        return
    for index, server in enumerate(_servers_in(payload)):
        usage = server.get("usage")
        if not isinstance(usage, dict):
            server["specifications"]["disk"] = -20
            continue
        traffic = usage["traffic"]
        match index % 3:
            case 0:
                traffic["incoming"]["value"] = -traffic["incoming"]["value"] - 1
                traffic["incoming"]["prev"] = -1
            case 1:
                usage["cpu"] = math.nan
                usage["disk"] = -3.5
            case _:
                traffic["outgoing"]["value"] = 1e300
                usage["ram"] = 1e300


def _timeout_delay(fault: Fault, rng: random.Random) -> float:
    return fault.number("delay")


def _latency_delay(fault: Fault, rng: random.Random) -> float:
    return fault.number("delay") + rng.uniform(0.0, fault.number("jitter"))


HUGE_BLOCK: Final = b",".join(
    [
        json_body(
            {
                "id": 1,
                "hostname": "bulk-server",
                "uuid": "00000000-0000-4000-8000-000000000000",
                "status": "started",
                "node": "srv-compute-01",
                "os": "Ubuntu 22.04",
                "specifications": {"cpu": 1, "ram": 2048, "disk": 20},
                "ip_addresses": [{"ip": "192.0.2.1", "is_primary": True}],
                "usage": None,
                "created_at": "2023-11-03T18:23:02.000000Z",
            }
        )
    ]
    * 256
)

FAULT_KINDS: Final[Mapping[str, FaultKind]] = MappingProxyType(
    {
        kind.name: kind
        for kind in (
            FaultKind(
                "server_error",
                "a 5xx answer (502 and 504 as the proxy's HTML page)",
                (Param("status", int, 500, 500, 599),),
                reply=_server_error,
            ),
            FaultKind(
                "unauthorized",
                "401 as if the token were revoked",
                reply=lambda fault, ctx: message_reply(401, "Unauthenticated."),
            ),
            FaultKind(
                "forbidden",
                "403",
                reply=lambda fault, ctx: message_reply(403, "This action is unauthorized."),
            ),
            FaultKind(
                "rate_limited",
                "429 with Retry-After in seconds, or as an HTTP date",
                (Param("retry_after", int, 30, 0, 86400), Param("http_date", bool, False)),
                reply=_rate_limited,
            ),
            FaultKind(
                "timeout",
                "wait before answering, longer than a client should",
                (Param("delay", float, 30.0, 0, 3600),),
                delay=_timeout_delay,
            ),
            FaultKind(
                "latency",
                "extra delay on every request, plus up to 'jitter' seconds",
                (Param("delay", float, 0.5, 0, 600), Param("jitter", float, 0.0, 0, 600)),
                delay=_latency_delay,
            ),
            FaultKind("malformed_json", "200 with broken JSON", reply=_malformed_json),
            FaultKind("truncated_json", "200 with half of the JSON", reply=_truncated_json),
            FaultKind(
                "html_200",
                "200 with an HTML maintenance page",
                reply=lambda fault, ctx: html_reply(200, MAINTENANCE_PAGE),
            ),
            FaultKind(
                "wrong_types",
                "fields of the wrong JSON type",
                reply=_rewriting(_wrong_types),
            ),
            FaultKind(
                "missing_fields",
                "servers without id or hostname",
                reply=_rewriting(_missing_fields),
            ),
            FaultKind(
                "duplicate_ids",
                "the listing repeats ids with other data",
                reply=_rewriting(_duplicate_ids),
            ),
            FaultKind(
                "absurd_values",
                "negative bytes, NaN, 1e300",
                reply=_rewriting(_absurd_values),
            ),
            FaultKind(
                "huge_response",
                "a streamed JSON body of 'megabytes' MiB",
                (Param("megabytes", float, 64.0, 0.001, 16384),),
                reply=_huge_response,
            ),
            FaultKind(
                "redirect_other_host",
                "302 to http://127.0.0.2:<port>/... or to 'location'",
                (Param("location", str, None),),
                reply=_redirect_other_host,
            ),
            FaultKind(
                "empty_200",
                "200 with an empty body",
                reply=lambda fault, ctx: Reply(200, (("content-type", JSON_TYPE),)),
            ),
        )
    }
)
