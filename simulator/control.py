"""Control endpoints under ``/_simulator``: the truth, faults, counters and server changes.

They need no token: they exist for tests and the demo stack, never for the exporter.
Malformed requests get a 400 with a JSON ``message``; unknown servers a 404.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulator.faults import Endpoint, FaultError, FaultSet
from simulator.fleet import Fleet, UnknownServerError
from simulator.messages import Reply, Request, json_reply, message_reply, parse_id
from simulator.servers import DIRECTIONS, Direction

CONTROL_PREFIX: Final = "/_simulator"
MAX_CONTROL_BODY_BYTES: Final = 1024 * 1024


class RequestStats:
    """API requests since start or the last reset, by endpoint and by response status."""

    def __init__(self) -> None:
        self.by_endpoint: Counter[Endpoint] = Counter()
        self.by_status: Counter[int] = Counter()

    def count(self, endpoint: Endpoint) -> None:
        self.by_endpoint[endpoint] += 1

    def answered(self, status: int) -> None:
        self.by_status[status] += 1

    def reset(self) -> None:
        self.by_endpoint.clear()
        self.by_status.clear()

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, Any] = {"total": self.by_endpoint.total()}
        counts.update({endpoint.value: self.by_endpoint[endpoint] for endpoint in Endpoint})
        counts["responses"] = {str(status): n for status, n in sorted(self.by_status.items())}
        return counts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TrafficChange(_Strict):
    """New values for one direction of a server's traffic counter."""

    value: int | None = Field(None, ge=0)
    prev: int | None = Field(None, ge=0)
    limit_bytes: int | None = Field(None, ge=0)
    rate: float | None = Field(None, ge=0, description="bytes per second while started")


class IpAddress(_Strict):
    """One entry of a server's ``ip_addresses``."""

    ip: str = Field(min_length=1, max_length=64)
    is_primary: bool


class ServerChange(_Strict):
    """``PATCH /_simulator/servers/{id}``: every field is optional."""

    hostname: str | None = Field(None, min_length=1, max_length=253)
    status: str | None = Field(None, min_length=1, max_length=64)
    usage_null: bool | None = None
    traffic: dict[Direction, TrafficChange] | None = None


class NewServer(_Strict):
    """``POST /_simulator/servers``: details left out are made up."""

    hostname: str | None = Field(None, min_length=1, max_length=253)
    id: int | None = Field(None, ge=1, le=2**53)
    status: str = Field("started", min_length=1, max_length=64)
    usage_null: bool = False
    cpu: int | None = Field(None, ge=1, le=4096)
    ram: int | None = Field(None, ge=1, description="MB")
    disk: int | None = Field(None, ge=1, description="GB")
    os: str | None = Field(None, min_length=1, max_length=128)
    node: str | None = Field(None, min_length=1, max_length=128)
    ip_addresses: list[IpAddress] | None = Field(None, max_length=64)
    traffic_limit_bytes: int | None = Field(None, ge=0)
    traffic: dict[Direction, TrafficChange] | None = None


class BadRequest(Exception):
    """A control request that cannot be honoured; becomes a 400 with this message."""


ControlHandler = Callable[[Request, list[int]], Awaitable[Reply]]


class ControlApi:
    """Answers the control endpoints for one simulator's fleet, faults and request counters."""

    def __init__(
        self, fleet: Fleet, faults: FaultSet, stats: RequestStats, logger: logging.Logger
    ) -> None:
        self.fleet = fleet
        self.faults = faults
        self.stats = stats
        self._log = logger
        self._routes: dict[str, dict[str, ControlHandler]] = {
            "state": {"GET": self._get_state},
            "stats": {"GET": self._get_stats},
            "stats/reset": {"POST": self._reset_stats},
            "faults": {
                "GET": self._list_faults,
                "POST": self._add_fault,
                "DELETE": self._clear_faults,
            },
            "faults/{id}": {"DELETE": self._remove_fault},
            "servers": {"POST": self._add_server},
            "servers/{id}": {"PATCH": self._change_server, "DELETE": self._delete_server},
        }

    async def handle(self, request: Request) -> Reply:
        segments = request.path[len(CONTROL_PREFIX) :].strip("/").split("/")
        ids = [parse_id(segment) for segment in segments]
        key = "/".join("{id}" if i is not None else s for s, i in zip(segments, ids, strict=True))
        methods = self._routes.get(key)
        if methods is None:
            return message_reply(404, f"no control endpoint {request.path}")
        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join(methods)
            return message_reply(405, f"use {allowed}", (("allow", allowed),))
        try:
            return await handler(request, [i for i in ids if i is not None])
        except ValidationError as error:  # before ValueError, its base class
            return message_reply(400, _describe(error))
        except (BadRequest, FaultError, ValueError) as error:
            return message_reply(400, str(error))
        except UnknownServerError as error:
            return message_reply(404, str(error))

    async def _get_state(self, request: Request, ids: list[int]) -> Reply:
        state = self.fleet.state()
        state["stats"] = self.stats.to_json()
        state["faults"] = [fault.to_json() for fault in self.faults.active()]
        return json_reply(200, state)

    async def _get_stats(self, request: Request, ids: list[int]) -> Reply:
        return json_reply(200, self.stats.to_json())

    async def _reset_stats(self, request: Request, ids: list[int]) -> Reply:
        self.stats.reset()
        return json_reply(200, self.stats.to_json())

    async def _list_faults(self, request: Request, ids: list[int]) -> Reply:
        return json_reply(200, [fault.to_json() for fault in self.faults.active()])

    async def _add_fault(self, request: Request, ids: list[int]) -> Reply:
        fault = self.faults.add_from_json(await _json_body(request))
        self._log.info("fault on: %s (scope %s)", fault.kind.name, fault.scope.value)
        return json_reply(201, fault.to_json())

    async def _clear_faults(self, request: Request, ids: list[int]) -> Reply:
        return json_reply(200, {"cleared": self.faults.clear()})

    async def _remove_fault(self, request: Request, ids: list[int]) -> Reply:
        if not self.faults.remove(ids[0]):
            return message_reply(404, f"no fault with id {ids[0]}")
        return json_reply(200, {"removed": ids[0]})

    async def _add_server(self, request: Request, ids: list[int]) -> Reply:
        new = NewServer.model_validate(await _json_body(request))
        addresses = None
        if new.ip_addresses is not None:
            addresses = [(address.ip, address.is_primary) for address in new.ip_addresses]
        server_id = self.fleet.add_server(
            new.hostname,
            status=new.status,
            usage_null=new.usage_null,
            server_id=new.id,
            cpu=new.cpu,
            ram_mb=new.ram,
            disk_gb=new.disk,
            os=new.os,
            node=new.node,
            ip_addresses=addresses,
            traffic_limit_bytes=new.traffic_limit_bytes,
        )
        self._change_traffic(server_id, new.traffic)
        return json_reply(201, self.fleet.server(server_id))

    async def _change_server(self, request: Request, ids: list[int]) -> Reply:
        change = ServerChange.model_validate(await _json_body(request))
        server_id = ids[0]
        self.fleet.server(server_id)  # 404 before changing anything
        if change.hostname is not None:
            self.fleet.rename_server(server_id, change.hostname)
        if change.status is not None:
            self.fleet.set_status(server_id, change.status)
        if change.usage_null is not None:
            self.fleet.set_usage_null(server_id, change.usage_null)
        self._change_traffic(server_id, change.traffic)
        return json_reply(200, self.fleet.server(server_id))

    async def _delete_server(self, request: Request, ids: list[int]) -> Reply:
        self.fleet.delete_server(ids[0])
        return json_reply(200, {"deleted": ids[0]})

    def _change_traffic(
        self, server_id: int, traffic: dict[Direction, TrafficChange] | None
    ) -> None:
        for direction in DIRECTIONS:
            change = (traffic or {}).get(direction)
            if change is not None:
                self.fleet.set_traffic(
                    server_id,
                    direction,
                    value=change.value,
                    prev=change.prev,
                    limit_bytes=change.limit_bytes,
                    rate=change.rate,
                )


async def _json_body(request: Request) -> Any:
    body = await request.body(MAX_CONTROL_BODY_BYTES)
    if body is None:
        raise BadRequest(f"request body larger than {MAX_CONTROL_BODY_BYTES} bytes")
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None


def _describe(error: ValidationError) -> str:
    problems = []
    for problem in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        problems.append(f"{where}: {problem['msg']}")
    return "; ".join(problems)
