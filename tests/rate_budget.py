"""The rate budget against a simulator that enforces a limit: no 429, listing polls on time,
every server's status refreshed across windows.

The full run, as README "Rate limits" reports it (ten minutes, 200 servers, 60 requests a
minute, the status collector on):

    python -m tests.rate_budget --minutes 10

tests/test_rate_budget.py runs the same with the time compressed tenfold.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from tests.processes import exporter, simulator
from tests.scrape import one, scrape

TOKEN = "rate-budget-token-3d9a"


@dataclass(frozen=True)
class Result:
    seconds: float
    limit: int
    window: float
    servers: int
    answers_429: int
    listing_polls: int
    expected_listing_polls: int
    largest_gap_between_polls: float
    status_calls: int
    sweeps_completed: float
    servers_with_status: int
    paced: bool
    resumed: bool


def run(
    tmp: Path,
    *,
    seconds: float,
    servers: int,
    limit: int,
    window: float,
    poll_interval: float,
    status_interval: float,
) -> Result:
    sim_args = ("--servers", str(servers), "--rate-limit", str(limit),
                "--rate-window", str(window))  # fmt: skip
    with simulator(tmp, *sim_args, token=TOKEN) as sim:
        token = tmp / "token"
        token.write_text(TOKEN)
        token.chmod(0o600)
        args = ("--api.url", f"{sim.url}/api/v1", "--api.token-file", str(token),
                "--poll.interval", str(poll_interval), "--collector.status",
                "--collector.status.interval", str(status_interval))  # fmt: skip
        with exporter(tmp, *args) as proc:
            # Measured from the first good poll on, so the start-up is not counted.
            httpx.post(f"{sim.url}/_simulator/stats/reset").raise_for_status()
            started = time.monotonic()
            polls: list[float] = []
            while time.monotonic() - started < seconds:
                stamp = one(scrape(proc.url), "evotic_last_successful_poll_timestamp_seconds")
                if not polls or stamp != polls[-1]:
                    polls.append(stamp)
                time.sleep(0.5)
            stats = httpx.get(f"{sim.url}/_simulator/stats").json()
            samples = scrape(proc.url)
            with_status = {s.labels["server_id"] for s in samples
                           if s.name == "evotic_server_processing"}  # fmt: skip
            output = proc.output()
    gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
    return Result(
        seconds=seconds, limit=limit, window=window, servers=servers,
        answers_429=int(stats["responses"].get("429", 0)),
        listing_polls=int(stats["servers"]),
        expected_listing_polls=int(seconds // poll_interval),
        largest_gap_between_polls=round(max(gaps, default=0.0), 2),
        status_calls=int(stats["status"]),
        sweeps_completed=round(int(stats["status"]) / servers, 2),
        servers_with_status=len(with_status),
        paced="pacing status calls until the rate limit window resets" in output,
        resumed="status calls resumed" in output,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--limit", type=int, default=60, help="requests per window")
    parser.add_argument("--window", type=float, default=60, help="seconds")
    parser.add_argument("--poll-interval", type=float, default=60)
    parser.add_argument("--status-interval", type=float, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(Path(tmp), seconds=args.minutes * 60, servers=args.servers,
                     limit=args.limit, window=args.window, poll_interval=args.poll_interval,
                     status_interval=args.status_interval)  # fmt: skip
    print(json.dumps(asdict(result), indent=2))
    good = (result.answers_429 == 0 and result.servers_with_status == result.servers
            and result.largest_gap_between_polls <= 1.5 * args.poll_interval)  # fmt: skip
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
