"""The API client's own logic: pagination, validation fallback, retry policy, limits.

Only here is the network faked, with ``httpx.MockTransport``, because what is under test is
what the client does with each answer; everything else runs against the real simulator.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from exporter.api.client import EvoticClient, RetryPolicy, parse_retry_after
from exporter.api.errors import (
    ApiStatusError,
    ApiTimeoutError,
    InvalidResponseError,
    RateLimitedError,
)
from exporter.api.token import TokenSource
from exporter.runtime.logs import Redactor

BASE = "https://api.test/api/v1"
TOKEN = "t0k3n-for-client-tests"


def _server(i: int, **extra: object) -> dict[str, object]:
    return {"id": i, "hostname": f"h{i}", "status": "started", **extra}


class Recorder:
    """A MockTransport handler that answers from a list and remembers every request."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else answer


def _client(handler: Recorder, **kwargs: object) -> tuple[EvoticClient, list[float]]:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client = EvoticClient(
        BASE, lambda: TOKEN, timeout=5, user_agent="evotic-exporter/test",
        transport=httpx.MockTransport(handler), sleep=sleep, rng=random.Random(7),
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    return client, sleeps


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_bare_array_listing_with_auth_and_user_agent() -> None:
    handler = Recorder(httpx.Response(200, json=[_server(1), _server(2)]))
    client, _ = _client(handler)
    listing = run(client.list_servers())
    assert [s.id for s in listing.servers] == ["1", "2"]
    request = handler.requests[0]
    assert request.url == f"{BASE}/servers"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"] == "evotic-exporter/test"
    assert TOKEN not in str(request.url)


def test_paginated_listing_follows_next_until_null() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor", "0")
        nxt = {"0": f"{BASE}/servers?cursor=a", "a": f"{BASE}/servers?cursor=b", "b": None}
        ids = {"0": [1, 2], "a": [3], "b": [4]}[cursor]
        return httpx.Response(200, json={"data": [_server(i) for i in ids],
                                         "links": {"next": nxt[cursor]}, "meta": {}})  # fmt: skip

    handler = Recorder(page)
    client, _ = _client(handler)
    listing = run(client.list_servers())
    assert [s.id for s in listing.servers] == ["1", "2", "3", "4"]
    assert listing.pages == 3


def test_numbered_pages_are_fetched_concurrently_after_the_first() -> None:
    in_flight = 0
    peak = 0

    async def page(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        number = int(request.url.params.get("page", "1"))
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json={
            "data": [_server(number * 10 + k) for k in range(2)],
            "links": {"next": f"{BASE}/servers?page={number + 1}" if number < 6 else None},
            "meta": {"current_page": number, "last_page": 6, "per_page": 2, "total": 12},
        })  # fmt: skip

    client = EvoticClient(BASE, lambda: TOKEN, timeout=5, user_agent="t",
                          transport=httpx.MockTransport(page))  # fmt: skip
    listing = run(client.list_servers())
    assert len(listing.servers) == 12
    assert peak > 1


def test_next_link_to_another_origin_is_refused() -> None:
    page = {"data": [_server(1)], "links": {"next": "https://evil.test/steal"}, "meta": {}}
    handler = Recorder(httpx.Response(200, json=page))
    client, _ = _client(handler)
    with pytest.raises(InvalidResponseError, match="another origin"):
        run(client.list_servers())
    assert all(r.url.host == "api.test" for r in handler.requests)


def test_redirect_is_not_followed() -> None:
    handler = Recorder(httpx.Response(302, headers={"Location": "https://evil.test/"}))
    client, _ = _client(handler)
    with pytest.raises(InvalidResponseError, match="redirect"):
        run(client.list_servers())
    assert len(handler.requests) == 1


def test_bad_records_are_set_aside_and_duplicates_dropped() -> None:
    good = [_server(i) for i in range(1, 6)]
    records = [*good, {"hostname": "no-id"}, _server(6, usage={"cpu": -5}), _server(1)]
    handler = Recorder(httpx.Response(200, json=records))
    client, _ = _client(handler)
    listing = run(client.list_servers())
    assert [s.id for s in listing.servers] == ["1", "2", "3", "4", "5"]
    assert [r.server_id for r in listing.rejected] == [None, "6", "1"]
    assert "usage.cpu" in listing.rejected[1].errors[0]
    assert "listed more than once" in listing.rejected[2].errors[0]


def test_a_listing_mostly_of_bad_records_is_invalid() -> None:
    records = [_server(1), _server(2, hostname=None), _server(3, usage={"ram": "lots"})]
    handler = Recorder(httpx.Response(200, json=records))
    client, _ = _client(handler)
    with pytest.raises(InvalidResponseError, match="2 of 3 listed servers failed validation"):
        run(client.list_servers())


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'[{"id": 1, "hostname": "a"}', b"<html>error</html>", b"", b'{"data": 5}'],
)
def test_unparsable_listing_is_an_invalid_response(body: bytes) -> None:
    handler = Recorder(httpx.Response(200, content=body))
    client, _ = _client(handler)
    with pytest.raises(InvalidResponseError):
        run(client.list_servers())


def test_server_errors_are_retried_with_capped_jittered_backoff() -> None:
    handler = Recorder(httpx.Response(503), httpx.Response(502), httpx.Response(200, json=[]))
    client, sleeps = _client(handler)
    assert run(client.list_servers()).servers == ()
    assert len(handler.requests) == 3
    assert len(sleeps) == 2
    assert all(0 <= s <= RetryPolicy().backoff_cap for s in sleeps)


def test_server_errors_give_up_after_max_attempts() -> None:
    handler = Recorder(httpx.Response(500))
    client, _ = _client(handler)
    with pytest.raises(ApiStatusError) as caught:
        run(client.list_servers())
    assert caught.value.reason == "server_error"
    assert len(handler.requests) == RetryPolicy().max_attempts


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_not_retried(status: int) -> None:
    handler = Recorder(httpx.Response(status))
    client, _ = _client(handler)
    with pytest.raises(ApiStatusError) as caught:
        run(client.list_servers())
    assert caught.value.reason == "auth"
    assert len(handler.requests) == 1


def test_timeouts_are_retried_then_reported() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    handler = Recorder(timeout)
    client, _ = _client(handler)
    with pytest.raises(ApiTimeoutError):
        run(client.list_servers())
    assert len(handler.requests) == RetryPolicy().max_attempts


def test_rate_limit_holds_every_request_until_retry_after() -> None:
    now = [1000.0]
    handler = Recorder(httpx.Response(429, headers={"Retry-After": "30"}),
                       httpx.Response(200, json=[]))  # fmt: skip
    client, _ = _client(handler, monotonic=lambda: now[0])
    with pytest.raises(RateLimitedError) as caught:
        run(client.list_servers())
    assert caught.value.retry_after == 30
    now[0] += 29
    with pytest.raises(RateLimitedError):
        run(client.list_servers())
    assert len(handler.requests) == 1, "nothing may be sent before Retry-After has passed"
    now[0] += 2
    assert run(client.list_servers()).servers == ()
    assert len(handler.requests) == 2


def test_retry_after_is_capped() -> None:
    handler = Recorder(httpx.Response(429, headers={"Retry-After": "999999"}))
    client, _ = _client(handler)
    with pytest.raises(RateLimitedError) as caught:
        run(client.list_servers())
    assert caught.value.retry_after == RetryPolicy().retry_after_cap


def test_retry_after_http_date_and_seconds() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now.timestamp()) == pytest.approx(90)
    assert parse_retry_after("42", 0) == 42
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after(None, 0) is None


def test_response_larger_than_the_cap_is_refused() -> None:
    handler = Recorder(httpx.Response(200, content=b"[" + b" " * 5000 + b"]"))
    client, _ = _client(handler, max_response_bytes=1000)
    with pytest.raises(InvalidResponseError, match="larger than"):
        run(client.list_servers())


def test_status_endpoint_url_and_model() -> None:
    handler = Recorder(httpx.Response(200, json={
        "status": "creating the backup", "real_status": "started",
        "is_processing": True, "progress": 53}))  # fmt: skip
    client, _ = _client(handler)
    status = run(client.server_status("7"))
    assert handler.requests[0].url == f"{BASE}/servers/7/status"
    assert status.is_processing
    assert status.progress == 53


def test_requests_are_observed_by_endpoint_and_code() -> None:
    seen: list[tuple[str, str]] = []
    handler = Recorder(httpx.Response(500), httpx.Response(200, content=json.dumps([]).encode()))
    client, _ = _client(handler, observe=lambda e, c, s: seen.append((e, c)))
    run(client.list_servers())
    assert seen == [("servers", "500"), ("servers", "200")]


def test_no_retry_is_started_that_would_overrun_the_deadline() -> None:
    handler = Recorder(httpx.Response(503))
    client, sleeps = _client(handler, retry=RetryPolicy(backoff_base=10, backoff_cap=10))

    async def poll() -> None:
        with client.deadline(0.001):
            await client.list_servers()

    with pytest.raises(ApiStatusError) as caught:
        run(poll())
    assert caught.value.reason == "server_error"
    assert len(handler.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize(("status", "words"), [(401, "token rejected"), (403, "token not allowed")])
def test_auth_errors_name_where_the_token_came_from(
    tmp_path: Path, status: int, words: str
) -> None:
    path = tmp_path / "token"
    path.write_text("file-token-0b1e")
    token = TokenSource(Redactor(), path=path)
    token.refresh()
    client = EvoticClient("https://api.test/v1", token, timeout=1, user_agent="t",
                          transport=httpx.MockTransport(lambda request: httpx.Response(status)),
                          auth_origin=token.origin)  # fmt: skip
    with pytest.raises(ApiStatusError) as caught:
        run(client.list_servers())
    assert str(caught.value) == (
        f"HTTP {status}: {words} (from the token file {path}, read again next poll)"
    )
    assert "file-token-0b1e" not in str(caught.value)
