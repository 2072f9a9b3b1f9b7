"""One simulated server: its description, its usage as a function of time, and its API JSON.

Usage figures are smooth functions of the clock rather than random draws, so two reads a second
apart look like two samples of one machine. Traffic per direction is
``burst * (1 - exp(-t / 10 min)) + rate * t`` with ``t`` the seconds since the billing period began
(day 1 of the month, 00:00 UTC), so it only grows within a period and starts again at zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

Clock = Callable[[], float]
"""Returns the current time in Unix seconds."""

Direction = Literal["incoming", "outgoing"]
DIRECTIONS: Final[tuple[Direction, ...]] = get_args(Direction)

JsonObject = dict[str, Any]

BURST_SECONDS: Final = 600.0


def billing_period_start(now: float) -> float:
    """Unix time of day 1, 00:00 UTC, of the month that contains ``now``."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def format_timestamp(seconds: float) -> str:
    """Laravel's JSON rendering of a timestamp column, which has whole-second precision."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


@dataclass(frozen=True, slots=True)
class Plan:
    """A server size as Evotic sells it, with the traffic allowance that comes with it."""

    cpu: int
    ram_mb: int
    disk_gb: int
    traffic_limit_bytes: int


@dataclass(frozen=True, slots=True)
class Profile:
    """What the API says about a server apart from its usage; replaced whole when it changes.

    Being immutable lets it carry its own pre-rendered JSON: a listing of tens of thousands of
    servers then only formats the numbers that move.
    """

    id: int
    hostname: str
    uuid: str
    status: str
    node: str
    os: str
    plan: Plan
    ip_addresses: tuple[tuple[str, bool], ...]
    created_at: float
    json_head: str = field(init=False, repr=False, compare=False)
    json_tail: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        head = json.dumps(
            {
                "id": self.id,
                "hostname": self.hostname,
                "uuid": self.uuid,
                "status": self.status,
                "node": self.node,
                "os": self.os,
                "specifications": self.specifications(),
                "ip_addresses": self.ip_objects(),
                "usage": None,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        object.__setattr__(self, "json_head", head.removesuffix("null}"))
        object.__setattr__(self, "json_tail", f',"created_at":"{self.created_text}"}}')

    @property
    def created_text(self) -> str:
        return format_timestamp(self.created_at)

    def specifications(self) -> JsonObject:
        return {"cpu": self.plan.cpu, "ram": self.plan.ram_mb, "disk": self.plan.disk_gb}

    def ip_objects(self) -> list[JsonObject]:
        return [{"ip": ip, "is_primary": primary} for ip, primary in self.ip_addresses]


@dataclass(slots=True)
class TrafficMeter:
    """One direction of a server's traffic counter for the current billing period."""

    rate: float
    """Bytes per second while the server runs."""
    burst: float
    """Bytes that arrive in the first minutes of every period."""
    prev: int
    limit: int
    anchor_time: float | None = None
    """Set when the counter was forced or its growth changed. Until the next period begins the
    value grows from the anchor instead of following the formula, which keeps it monotonic."""
    anchor_value: float = 0.0

    def value_at(self, now: float, period_start: float, running: bool) -> int:
        rate = self.rate if running else 0.0
        if self.anchor_time is not None and self.anchor_time >= period_start:
            return int(self.anchor_value + rate * max(0.0, now - self.anchor_time))
        if not running:
            return 0
        elapsed = max(0.0, now - period_start)
        burst = -self.burst * math.expm1(-elapsed / BURST_SECONDS) if self.burst else 0.0
        return int(burst + rate * elapsed)

    def anchor(self, now: float, value: float) -> None:
        self.anchor_time = now
        self.anchor_value = value


@dataclass(frozen=True, slots=True)
class Task:
    """A recurring job that the status endpoint reports with a progress percentage."""

    name: str
    duration: float
    idle: float
    phase: float

    def progress_at(self, now: float) -> int | None:
        """Percent done while the task runs, ``None`` while the server idles between runs."""
        position = (now + self.phase) % (self.duration + self.idle)
        if position >= self.duration:
            return None
        return int(100 * position / self.duration)


@dataclass(frozen=True, slots=True)
class Wave:
    """A sine wave around a base value: how CPU and memory use drift over the day."""

    base: float
    amplitude: float
    omega: float
    phase: float

    def at(self, now: float) -> float:
        return self.base + self.amplitude * math.sin(self.omega * now + self.phase)


@dataclass(slots=True)
class ServerRecord:
    """Everything the fleet knows about one server, including what the API never shows."""

    profile: Profile
    traffic: dict[Direction, TrafficMeter]
    cpu_waves: tuple[Wave, Wave]
    """Percent of the whole machine: a slow daily swing plus a faster wobble."""
    ram_wave: Wave
    """Fraction of the plan's memory in use."""
    disk_start_fraction: float
    disk_growth_per_second: float
    task: Task | None = None
    progress_done: bool = True
    """What the status endpoint reports when idle: 100 after some past task, else 0."""
    usage_hidden: bool = False
    install_started_at: float | None = None
    install_done_at: float | None = None

    @property
    def id(self) -> int:
        return self.profile.id

    @property
    def status(self) -> str:
        return self.profile.status

    @property
    def running(self) -> bool:
        return self.profile.status == "started"

    def cpu_at(self, now: float) -> float:
        slow, fast = self.cpu_waves
        return round(min(100.0, max(0.0, slow.at(now) + fast.at(now))), 2)

    def ram_at(self, now: float) -> int:
        return int(self.profile.plan.ram_mb * min(0.98, max(0.02, self.ram_wave.at(now))))

    def disk_at(self, now: float) -> float:
        grown = self.disk_growth_per_second * max(0.0, now - self.profile.created_at)
        return round(self.profile.plan.disk_gb * min(0.97, self.disk_start_fraction + grown), 1)

    def has_usage(self) -> bool:
        return not self.usage_hidden and self.profile.status != "installing"

    def usage_at(self, now: float, period_start: float) -> JsonObject | None:
        if not self.has_usage():
            return None
        running = self.running
        traffic: JsonObject = {}
        for direction, meter in self.traffic.items():
            value = meter.value_at(now, period_start, running)
            traffic[direction] = {
                "value": value,
                "prev": meter.prev,
                "is_exceeded": value > meter.limit,
            }
        return {
            "cpu": self.cpu_at(now) if running else 0.0,
            "disk": self.disk_at(now),
            "ram": self.ram_at(now) if running else 0,
            "traffic": traffic,
        }

    def to_api(self, now: float, period_start: float) -> JsonObject:
        """The server object exactly as ``GET /api/v1/servers`` documents it."""
        profile = self.profile
        return {
            "id": profile.id,
            "hostname": profile.hostname,
            "uuid": profile.uuid,
            "status": profile.status,
            "node": profile.node,
            "os": profile.os,
            "specifications": profile.specifications(),
            "ip_addresses": profile.ip_objects(),
            "usage": self.usage_at(now, period_start),
            "created_at": profile.created_text,
        }

    def to_api_json(self, now: float, period_start: float) -> str:
        """``json.dumps(self.to_api(...))`` without building the dictionaries.

        The listing of a large fleet is rendered this way; a test holds the two renderings equal.
        """
        profile = self.profile
        if not self.has_usage():
            return f"{profile.json_head}null{profile.json_tail}"
        running = self.running
        incoming, outgoing = self.traffic["incoming"], self.traffic["outgoing"]
        value_in = incoming.value_at(now, period_start, running)
        value_out = outgoing.value_at(now, period_start, running)
        cpu = self.cpu_at(now) if running else 0.0
        ram = self.ram_at(now) if running else 0
        return (
            f'{profile.json_head}{{"cpu":{cpu!r},"disk":{self.disk_at(now)!r},"ram":{ram},'
            f'"traffic":{{"incoming":{{"value":{value_in},"prev":{incoming.prev},'
            f'"is_exceeded":{"true" if value_in > incoming.limit else "false"}}},'
            f'"outgoing":{{"value":{value_out},"prev":{outgoing.prev},'
            f'"is_exceeded":{"true" if value_out > outgoing.limit else "false"}}}}}}}'
            f"{profile.json_tail}"
        )

    def status_at(self, now: float) -> JsonObject:
        """The body of ``GET /api/v1/servers/{id}/status``."""
        status = self.profile.status
        real_status = "started" if self.running else "stopped"
        if status == "installing":
            return {
                "status": status,
                "real_status": real_status,
                "is_processing": True,
                "progress": self._install_progress(now),
            }
        if self.task is not None and self.running:
            progress = self.task.progress_at(now)
            if progress is not None:
                return {
                    "status": self.task.name,
                    "real_status": real_status,
                    "is_processing": True,
                    "progress": progress,
                }
        return {
            "status": status,
            "real_status": real_status,
            "is_processing": False,
            "progress": 100 if self.progress_done else 0,
        }

    def _install_progress(self, now: float) -> int:
        if self.install_started_at is not None and self.install_done_at is not None:
            span = max(1e-9, self.install_done_at - self.install_started_at)
            return min(99, max(0, int(100 * (now - self.install_started_at) / span)))
        # Servers that were already installing when the fleet was made never finish;
        # their progress cycles every 15 minutes so that it still visibly moves.
        return int((now + self.id * 37) % 900 / 9)
