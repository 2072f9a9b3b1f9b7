"""The simulated Evotic fleet: the truth behind every API answer, on an injected clock.

Nothing here does I/O or reads the wall clock: ``clock`` (Unix seconds) is passed in, so a test can
move time a minute forward or across a month boundary and see exactly what the API would report.
With the default seed and size, a few servers are over their traffic limit and a couple more are
heading there; ``state()`` shows the limits the API itself never reveals.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Final

from simulator.generator import ServerFactory, new_meters
from simulator.servers import (
    Clock,
    Direction,
    JsonObject,
    Plan,
    ServerRecord,
    billing_period_start,
    format_timestamp,
)

FIRST_SERVER_ID: Final = 101
MAX_CHURN_STEPS_PER_READ: Final = 1_000
"""A clock that jumps far ahead (a suspended laptop, a fake clock) replays only the last steps,
not millions of them in one request: a thousand replace every server of a demo fleet many
times, in a tenth of a second."""


class UnknownServerError(KeyError):
    """No server with this id exists (any more)."""

    def __init__(self, server_id: int) -> None:
        super().__init__(server_id)
        self.server_id = server_id

    def __str__(self) -> str:
        return f"no server with id {self.server_id}"


class Fleet:
    """A deterministic fleet of Evotic servers that lives on the injected clock.

    ``Fleet(clock, servers=25, seed=1)`` always produces the same servers, and their usage and
    traffic depend only on ``clock()``. With ``churn_interval`` > 0, every interval after the
    fleet was made one server is deleted, one is created (with a fresh id, installing for a
    short while) and one is renamed. The control methods change the truth on purpose, for tests.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        servers: int = 25,
        seed: int = 1,
        churn_interval: float = 0.0,
    ) -> None:
        if servers < 0:
            raise ValueError("servers must not be negative")
        if not 0 <= churn_interval < math.inf:
            raise ValueError("churn_interval must be a non-negative number of seconds")
        self._clock = clock
        self._seed = seed
        self._churn_interval = churn_interval
        self._born = clock()
        self._churn_steps = 0
        rng = random.Random(seed)
        self._factory = ServerFactory(rng)
        records = self._factory.initial_fleet(rng, servers, FIRST_SERVER_ID)
        self._servers = {record.id: record for record in records}
        self._next_id = records[-1].id + 1 if records else FIRST_SERVER_ID
        self._pending_installs: dict[int, float] = {}
        self._version = 0
        self._sorted_ids: tuple[int, list[int]] = (-1, [])
        self._listing_cache: tuple[tuple[int, int], bytes] | None = None

    # -- reading -----------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def churn_interval(self) -> float:
        return self._churn_interval

    @property
    def version(self) -> int:
        """Changes whenever a server is added, deleted or changed (not when time passes)."""
        return self._version

    def now(self) -> float:
        """The fleet's current time, after applying any churn that has become due."""
        now = self._clock()
        self._advance(now)
        return now

    def __len__(self) -> int:
        self.now()
        return len(self._servers)

    def __contains__(self, server_id: object) -> bool:
        self.now()
        return server_id in self._servers

    def ids(self) -> list[int]:
        """Ids of all current servers, ascending: the order of the listing."""
        self.now()
        return list(self._ordered_ids())

    def listing(self, offset: int = 0, limit: int | None = None) -> list[JsonObject]:
        """Server objects in listing order; ``offset`` and ``limit`` select one page."""
        now = self.now()
        period_start = billing_period_start(now)
        servers = self._servers
        return [servers[i].to_api(now, period_start) for i in self._page_ids(offset, limit)]

    def listing_json(self, offset: int = 0, limit: int | None = None) -> bytes:
        """The listing (or one page of it) as UTF-8 JSON, as the API sends it.

        The whole listing is built at most once per clock second and fleet change: a large
        fleet's listing costs real CPU, and values still move every second.
        """
        now = self.now()
        key = (math.floor(now), self._version)
        whole = offset == 0 and limit is None
        if whole and self._listing_cache is not None and self._listing_cache[0] == key:
            return self._listing_cache[1]
        period_start = billing_period_start(now)
        servers = self._servers
        parts = [servers[i].to_api_json(now, period_start) for i in self._page_ids(offset, limit)]
        body = f"[{','.join(parts)}]".encode()
        if whole:
            self._listing_cache = (key, body)
        return body

    def server(self, server_id: int) -> JsonObject:
        now = self.now()
        return self._record(server_id).to_api(now, billing_period_start(now))

    def status(self, server_id: int) -> JsonObject:
        now = self.now()
        return self._record(server_id).status_at(now)

    def traffic_limit_bytes(self, server_id: int, direction: Direction = "outgoing") -> int:
        """The allowance above which the API reports ``is_exceeded`` for this direction."""
        self.now()
        return self._record(server_id).traffic[direction].limit

    def traffic_value(self, server_id: int, direction: Direction) -> int:
        """Bytes counted so far in this billing period, even while ``usage`` is hidden."""
        now = self.now()
        record = self._record(server_id)
        return record.traffic[direction].value_at(now, billing_period_start(now), record.running)

    def state(self) -> JsonObject:
        """The fleet's truth, including what the API does not show (limits, hidden usage)."""
        now = self.now()
        period_start = billing_period_start(now)
        servers = []
        for server_id in self._ordered_ids():
            record = self._servers[server_id]
            traffic = {}
            for direction, meter in record.traffic.items():
                value = meter.value_at(now, period_start, record.running)
                traffic[direction] = {
                    "value": value,
                    "prev": meter.prev,
                    "limit_bytes": meter.limit,
                    "is_exceeded": value > meter.limit,
                }
            servers.append(
                {
                    "id": record.id,
                    "hostname": record.profile.hostname,
                    "status": record.status,
                    "usage_null": not record.has_usage(),
                    "traffic": traffic,
                }
            )
        return {
            "now": now,
            "billing_period_start": format_timestamp(period_start),
            "seed": self._seed,
            "churn_interval": self._churn_interval,
            "churn_steps": self._churn_steps,
            "servers": servers,
        }

    # -- control -----------------------------------------------------------------------------

    def add_server(
        self,
        hostname: str | None = None,
        *,
        status: str = "started",
        usage_null: bool = False,
        server_id: int | None = None,
        cpu: int | None = None,
        ram_mb: int | None = None,
        disk_gb: int | None = None,
        os: str | None = None,
        node: str | None = None,
        ip_addresses: list[tuple[str, bool]] | None = None,
        traffic_limit_bytes: int | None = None,
    ) -> int:
        """Create a server now and return its id; details left out are made up."""
        now = self.now()
        if server_id is not None and (server_id < 1 or server_id in self._servers):
            raise ValueError(f"server id {server_id} is not positive or already in use")
        if server_id is None:
            server_id = self._next_id
        if hostname is not None:
            self._factory.claim_hostname(hostname)
        rng = random.Random(f"{self._seed}:add:{server_id}:{self._version}")
        record = self._factory.new_server(
            rng, server_id, float(int(now)), status=status, hostname=hostname
        )
        profile = record.profile
        plan = profile.plan
        limit = plan.traffic_limit_bytes if traffic_limit_bytes is None else traffic_limit_bytes
        record.profile = dataclasses.replace(
            profile,
            plan=Plan(
                plan.cpu if cpu is None else cpu,
                plan.ram_mb if ram_mb is None else ram_mb,
                plan.disk_gb if disk_gb is None else disk_gb,
                limit,
            ),
            os=profile.os if os is None else os,
            node=profile.node if node is None else node,
            ip_addresses=profile.ip_addresses if ip_addresses is None else tuple(ip_addresses),
        )
        record.traffic = new_meters(rng, limit, "normal")
        for meter in record.traffic.values():
            # Created mid-period: the counter starts at zero now, not at the period start.
            meter.anchor(now, 0.0)
        record.usage_hidden = usage_null
        self._insert(record)
        return server_id

    def delete_server(self, server_id: int) -> None:
        self.now()
        self._record(server_id)
        self._remove(server_id)

    def rename_server(self, server_id: int, hostname: str) -> None:
        self.now()
        record = self._record(server_id)
        self._factory.claim_hostname(hostname)
        record.profile = dataclasses.replace(record.profile, hostname=hostname)
        self._changed()

    def set_status(self, server_id: int, status: str) -> None:
        """Change the status; traffic keeps its value and grows only while ``started``."""
        now = self.now()
        record = self._record(server_id)
        period_start = billing_period_start(now)
        for meter in record.traffic.values():
            meter.anchor(now, meter.value_at(now, period_start, record.running))
        record.profile = dataclasses.replace(record.profile, status=status)
        record.install_started_at = record.install_done_at = None
        self._pending_installs.pop(server_id, None)
        self._changed()

    def set_usage_null(self, server_id: int, hidden: bool) -> None:
        """Make the API send ``"usage": null`` for this server, or stop doing so."""
        self.now()
        self._record(server_id).usage_hidden = hidden
        self._changed()

    def set_traffic(
        self,
        server_id: int,
        direction: Direction,
        *,
        value: int | None = None,
        prev: int | None = None,
        limit_bytes: int | None = None,
        rate: float | None = None,
    ) -> None:
        """Force one direction's counter; it grows on from ``value`` at ``rate`` bytes/s."""
        now = self.now()
        record = self._record(server_id)
        meter = record.traffic[direction]
        if value is None:
            value = meter.value_at(now, billing_period_start(now), record.running)
        meter.anchor(now, float(value))
        if prev is not None:
            meter.prev = prev
        if limit_bytes is not None:
            meter.limit = limit_bytes
        if rate is not None:
            meter.rate = rate
        self._changed()

    # -- internals ---------------------------------------------------------------------------

    def _record(self, server_id: int) -> ServerRecord:
        try:
            return self._servers[server_id]
        except KeyError:
            raise UnknownServerError(server_id) from None

    def _changed(self) -> None:
        self._version += 1

    def _ordered_ids(self) -> list[int]:
        version, ids = self._sorted_ids
        if version != self._version:
            ids = sorted(self._servers)
            self._sorted_ids = (self._version, ids)
        return ids

    def _page_ids(self, offset: int, limit: int | None) -> list[int]:
        ids = self._ordered_ids()
        return ids[offset:] if limit is None else ids[offset : offset + limit]

    def _insert(self, record: ServerRecord) -> None:
        self._servers[record.id] = record
        # Ids only grow: a deleted server's id never comes back.
        self._next_id = max(self._next_id, record.id + 1)
        self._changed()

    def _remove(self, server_id: int) -> None:
        del self._servers[server_id]
        self._pending_installs.pop(server_id, None)
        self._changed()

    def _advance(self, now: float) -> None:
        if self._churn_interval > 0:
            due = int((now - self._born) // self._churn_interval)
            if due > self._churn_steps:
                first = max(self._churn_steps + 1, due - MAX_CHURN_STEPS_PER_READ + 1)
                for step in range(first, due + 1):
                    self._churn(step, self._born + step * self._churn_interval)
                self._churn_steps = due
        if self._pending_installs:
            for server_id, done_at in list(self._pending_installs.items()):
                if done_at <= now:
                    self._finish_install(server_id, done_at)

    def _churn(self, step: int, at: float) -> None:
        rng = random.Random(f"{self._seed}:churn:{step}")
        ids = self._ordered_ids()
        if ids:
            self._remove(rng.choice(ids))
        # Finish before the next step, however short the interval.
        install_seconds = min(300.0, self._churn_interval / 2)
        record = self._factory.new_server(rng, self._next_id, float(int(at)), status="installing")
        record.install_started_at = at
        record.install_done_at = at + install_seconds
        self._insert(record)
        self._pending_installs[record.id] = at + install_seconds
        others = [server_id for server_id in self._ordered_ids() if server_id != record.id]
        if others:
            renamed = self._servers[rng.choice(others)]
            hostname = self._factory.new_hostname(rng)
            renamed.profile = dataclasses.replace(renamed.profile, hostname=hostname)
            self._changed()

    def _finish_install(self, server_id: int, done_at: float) -> None:
        del self._pending_installs[server_id]
        record = self._servers[server_id]
        profile = record.profile
        addresses = profile.ip_addresses or (
            (self._factory.new_v4(), True),
            (self._factory.v6_for(profile.node, server_id), False),
        )
        record.profile = dataclasses.replace(profile, status="started", ip_addresses=addresses)
        record.install_started_at = record.install_done_at = None
        for meter in record.traffic.values():
            meter.anchor(done_at, 0.0)
        self._changed()
