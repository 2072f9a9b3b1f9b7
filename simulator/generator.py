"""Makes up realistic servers: names, sizes, addresses, load profiles and traffic habits.

Every draw comes from the ``random.Random`` the caller passes in, so a seed reproduces a fleet.
Addresses come only from the documentation ranges (RFC 5737 and RFC 3849).
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Generic, Literal, TypeVar

from simulator.servers import (
    Direction,
    Plan,
    Profile,
    ServerRecord,
    Task,
    TrafficMeter,
    Wave,
)

_T = TypeVar("_T")

GIB: Final = 1024**3
TIB: Final = 1024**4
DEFAULT_TRAFFIC_LIMIT_BYTES: Final = 20 * TIB
AVERAGE_MONTH_SECONDS: Final = 30.44 * 86400
YEAR_SECONDS: Final = 365.25 * 86400
FLEET_EPOCH_START: Final = datetime(2021, 1, 1, tzinfo=UTC).timestamp()
FLEET_EPOCH_END: Final = datetime(2024, 10, 1, tzinfo=UTC).timestamp()
PROCESSING_TASKS: Final = (
    "creating the backup",
    "reinstalling",
    "resizing",
    "restoring the backup",
)
NODES: Final = tuple(f"srv-compute-{n:02d}" for n in range(1, 8))
HOSTNAME_PREFIXES: Final = (
    "web", "db", "api", "cache", "mail", "worker", "git", "ci", "vpn", "proxy", "backup",
    "monitor", "app", "redis", "search",
)  # fmt: skip
NON_ASCII_HOSTNAMES: Final = ("bücher-db", "サーバー-7", "сервер-2")
DOCUMENTATION_V4_NETWORKS: Final = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
DOCUMENTATION_V6_BASE: Final = int(ipaddress.IPv6Address("2001:db8::"))

TrafficRole = Literal["normal", "exceeded", "heading"]
"""``exceeded``: over the limit all month but its first minutes; ``heading``: near it by then."""


class Weighted(Generic[_T]):
    """A fixed choice with weights, its cumulative table computed once."""

    def __init__(self, *choices: tuple[_T, int]) -> None:
        self.values: Sequence[_T] = [value for value, _ in choices]
        self._cumulative = list(itertools.accumulate(weight for _, weight in choices))

    def pick(self, rng: random.Random) -> _T:
        return rng.choices(self.values, cum_weights=self._cumulative)[0]


PLANS: Final = Weighted(
    # The smaller the plan, the smaller its monthly traffic allowance.
    (Plan(1, 2048, 20, 2 * TIB), 3),
    (Plan(2, 4096, 40, 5 * TIB), 4),
    (Plan(4, 8192, 80, 10 * TIB), 3),
    (Plan(8, 16384, 160, DEFAULT_TRAFFIC_LIMIT_BYTES), 2),
    (Plan(16, 32768, 320, DEFAULT_TRAFFIC_LIMIT_BYTES), 1),
)
OPERATING_SYSTEMS: Final = Weighted(
    ("Ubuntu 22.04", 30),
    ("Ubuntu 24.04", 20),
    ("Debian 12", 20),
    ("Debian 11", 8),
    ("AlmaLinux 9", 8),
    ("Rocky Linux 9", 6),
    ("Windows Server 2022", 8),
)
HOSTNAME_SUFFIXES: Final = Weighted(("", 60), (".prod", 25), (".staging", 15))
CPU_PROFILES: Final = Weighted(
    # (base percent range, swing range): idle, light, busy and hot machines
    (((0.0, 1.0), (0.3, 1.5)), 3),
    (((3.0, 15.0), (1.0, 6.0)), 5),
    (((20.0, 60.0), (5.0, 20.0)), 3),
    (((60.0, 90.0), (5.0, 15.0)), 1),
)


@dataclass(frozen=True)
class FleetMix:
    """How many servers of a fleet of ``count`` get each status and traffic role."""

    installing: int
    suspended: int
    stopped: int
    exceeded: int
    heading: int
    tasks: int

    @classmethod
    def for_size(cls, count: int) -> FleetMix:
        installing = round(count * 0.06)
        suspended = 1 if count >= 8 else 0
        stopped = round(count * 0.12)
        started = count - installing - suspended - stopped
        exceeded = min(started, max(2, math.ceil(count * 0.1)) if count >= 10 else count // 5)
        heading = min(
            started - exceeded, max(2, round(count * 0.06)) if count >= 10 else count // 8
        )
        tasks = min(started, max(1, round(count * 0.08)) if count >= 5 else 0)
        return cls(installing, suspended, stopped, exceeded, heading, tasks)


class ServerFactory:
    """Creates server records; remembers hostnames and addresses already handed out."""

    def __init__(self, rng: random.Random) -> None:
        self._used_hostnames: set[str] = set(NON_ASCII_HOSTNAMES)
        self._hostname_counters: dict[str, int] = {}
        self._v4 = [
            str(host)
            for network in DOCUMENTATION_V4_NETWORKS
            for host in ipaddress.IPv4Network(network).hosts()
        ]
        rng.shuffle(self._v4)
        self._v4_next = 0

    def claim_hostname(self, hostname: str) -> None:
        self._used_hostnames.add(hostname)

    def new_hostname(self, rng: random.Random) -> str:
        prefix = rng.choice(HOSTNAME_PREFIXES)
        suffix = HOSTNAME_SUFFIXES.pick(rng)
        while True:
            number = self._hostname_counters.get(prefix, 0) + 1
            self._hostname_counters[prefix] = number
            hostname = f"{prefix}-{number:02d}{suffix}"
            if hostname not in self._used_hostnames:
                self._used_hostnames.add(hostname)
                return hostname

    def new_v4(self) -> str:
        # The three documentation networks hold 762 hosts; larger fleets share addresses.
        address = self._v4[self._v4_next % len(self._v4)]
        self._v4_next += 1
        return address

    @staticmethod
    def v6_for(node: str, server_id: int) -> str:
        node_number = NODES.index(node) + 1 if node in NODES else 0
        return str(ipaddress.IPv6Address(DOCUMENTATION_V6_BASE | node_number << 80 | server_id))

    def new_server(
        self,
        rng: random.Random,
        server_id: int,
        created_at: float,
        *,
        status: str = "started",
        hostname: str | None = None,
        traffic_role: TrafficRole = "normal",
    ) -> ServerRecord:
        plan = PLANS.pick(rng)
        node = rng.choice(NODES)
        addresses = [(self.new_v4(), True)]
        if rng.random() < 0.6:
            addresses.append((self.v6_for(node, server_id), False))
        if rng.random() < 0.15:
            addresses.append((self.new_v4(), False))
        if status == "installing" and rng.random() < 0.5:
            addresses = []
        (base_low, base_high), (swing_low, swing_high) = CPU_PROFILES.pick(rng)
        swing = rng.uniform(swing_low, swing_high)
        profile = Profile(
            id=server_id,
            hostname=hostname if hostname is not None else self.new_hostname(rng),
            uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            status=status,
            node=node,
            os=OPERATING_SYSTEMS.pick(rng),
            plan=plan,
            ip_addresses=tuple(addresses),
            created_at=created_at,
        )
        return ServerRecord(
            profile=profile,
            traffic=new_meters(rng, plan.traffic_limit_bytes, traffic_role),
            cpu_waves=(
                _wave(rng, rng.uniform(base_low, base_high), swing, 600, 7200),
                _wave(rng, 0.0, swing / 3, 60, 300),
            ),
            ram_wave=_wave(rng, rng.uniform(0.15, 0.85), rng.uniform(0.0, 0.05), 900, 14400),
            disk_start_fraction=rng.uniform(0.05, 0.6),
            disk_growth_per_second=rng.uniform(0.01, 0.12) / YEAR_SECONDS,
            progress_done=rng.random() < 0.7,
        )

    def initial_fleet(self, rng: random.Random, count: int, first_id: int) -> list[ServerRecord]:
        """``count`` servers in id order, mostly running, with the mix of ``FleetMix``."""
        mix = FleetMix.for_size(count)
        order = list(range(count))
        rng.shuffle(order)
        picks = iter(order)
        statuses = ["started"] * count
        for status, how_many in (
            ("installing", mix.installing),
            ("suspended", mix.suspended),
            ("stopped", mix.stopped),
        ):
            for _ in range(how_many):
                statuses[next(picks)] = status
        started = list(picks)
        roles: dict[int, TrafficRole] = dict.fromkeys(started[: mix.exceeded], "exceeded")
        roles.update(dict.fromkeys(started[mix.exceeded : mix.exceeded + mix.heading], "heading"))
        with_task = set(rng.sample(started, k=mix.tasks))
        non_ascii: dict[int, str] = {}
        if count >= 10:
            positions = rng.sample(range(count), k=len(NON_ASCII_HOSTNAMES))
            non_ascii = dict(zip(positions, NON_ASCII_HOSTNAMES, strict=True))
        created = sorted(int(rng.uniform(FLEET_EPOCH_START, FLEET_EPOCH_END)) for _ in range(count))

        records = []
        server_id = first_id
        for index in range(count):
            record = self.new_server(
                rng,
                server_id,
                float(created[index]),
                status=statuses[index],
                hostname=non_ascii.get(index),
                traffic_role=roles.get(index, "normal"),
            )
            if index in with_task:
                record.task = Task(
                    name=rng.choice(PROCESSING_TASKS),
                    duration=rng.uniform(120, 900),
                    idle=rng.uniform(300, 1800),
                    phase=rng.uniform(0, 3600),
                )
            records.append(record)
            # Gaps in the ids stand for servers deleted before the simulation began.
            server_id += rng.choice((1, 1, 1, 2, 3))
        return records


def _wave(
    rng: random.Random, base: float, amplitude: float, shortest: float, longest: float
) -> Wave:
    period = rng.uniform(shortest, longest)
    return Wave(base, amplitude, 2 * math.pi / period, rng.uniform(0, 2 * math.pi))


def new_meters(rng: random.Random, limit: int, role: TrafficRole) -> dict[Direction, TrafficMeter]:
    """Both traffic directions of a server whose allowance is ``limit`` bytes per direction."""
    outgoing_share = rng.uniform(0.005, 0.45)
    shares: dict[Direction, float] = {
        "incoming": outgoing_share * rng.uniform(0.1, 0.8),
        "outgoing": outgoing_share,
    }
    meters = {
        direction: TrafficMeter(
            rate=share * limit / AVERAGE_MONTH_SECONDS,
            burst=0.0,
            prev=int(share * limit * rng.uniform(0.6, 1.3)),
            limit=limit,
        )
        for direction, share in shares.items()
    }
    if role == "normal":
        return meters
    # Outbound-heavy servers (downloads, streaming) are the usual ones to use up their allowance.
    hot = meters["outgoing" if rng.random() < 0.7 else "incoming"]
    if role == "exceeded":
        # Exceeded within the first minutes of every period, then for the rest of the month.
        hot.burst = limit * rng.uniform(1.2, 1.6)
        hot.prev = int(limit * rng.uniform(1.05, 1.8))
    else:
        # Reaches 70-95 % of the allowance by the end of the month.
        hot.rate = limit / (AVERAGE_MONTH_SECONDS * rng.uniform(1.05, 1.4))
        hot.prev = int(limit * rng.uniform(0.7, 0.98))
    return meters
