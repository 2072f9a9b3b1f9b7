"""HTTP requests and replies as plain values, so that routes and faults never touch ASGI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from exporter.web.server import Receive, Scope

JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=UTF-8"


@dataclass(frozen=True)
class Reply:
    """One response: a status, headers, and either a body or a factory for a streamed body."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    stream: Callable[[], AsyncIterator[bytes]] | None = None
    """Sent chunk by chunk without a Content-Length, for bodies too large to hold."""

    @property
    def content_type(self) -> str | None:
        for name, value in self.headers:
            if name.lower() == "content-type":
                return value
        return None

    def json(self) -> Any:
        """The decoded body; for fault builders that rewrite a normal answer."""
        return json.loads(self.body)


def json_body(payload: object) -> bytes:
    # Laravel escapes non-ASCII by default; sending raw UTF-8 instead makes clients prove
    # they decode it. NaN is allowed because one fault sends it on purpose.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return raw_json_reply(status, json_body(payload), headers)


def raw_json_reply(status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, (("content-type", JSON_TYPE), *headers), body)


def html_reply(status: int, html: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, (("content-type", HTML_TYPE), *headers), html.encode())


def message_reply(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """Laravel's error shape: ``{"message": "..."}``."""
    return json_reply(status, {"message": message}, headers)


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request the simulator looks at."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    scheme: str
    port: int
    receive: Receive

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }
        server = scope.get("server") or ("127.0.0.1", 0)
        return cls(
            method=str(scope.get("method", "GET")).upper(),
            path=str(scope.get("path", "/")),
            query=bytes(scope.get("query_string", b"")).decode("latin-1"),
            headers=headers,
            scheme=str(scope.get("scheme", "http")),
            port=int(server[1] or 0),
            receive=receive,
        )

    async def body(self, limit: int) -> bytes | None:
        """The request body, or ``None`` when it is larger than ``limit`` bytes."""
        chunks = []
        size = 0
        while True:
            message = await self.receive()
            if message.get("type") != "http.request":
                break
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def parse_id(text: str) -> int | None:
    # isdecimal() alone accepts digits of every script, and int() would take them.
    if text.isascii() and text.isdecimal() and len(text) <= 18:
        return int(text)
    return None
