"""Soak test: the exporter under churn and faults, watched for growth in series, fds and RSS.

Accelerated: 1-second polls, a fleet that deletes, creates and renames a server every second,
and faults switched on and off in turn. Run it for as long as you like:

    python -m tests.soak --duration 600 --servers 200

It prints one line per sample and a verdict, writes the samples as JSON (``--report``), and
exits 1 when series, open file descriptors or resident memory did not stay flat. CI runs a
short version (tests/test_soak.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from tests.processes import Process, exporter, simulator

TOKEN = "soak-token-0c4e"
# Each fault is on for a few seconds, then off for as long; a rate limit holds requests.
FAULT_CYCLE = (
    {"kind": "server_error", "params": {"status": 503}},
    {"kind": "malformed_json"},
    {"kind": "rate_limited", "params": {"retry_after": 2}},
    {"kind": "duplicate_ids"},
    {"kind": "timeout", "params": {"delay": 3}},
    {"kind": "unauthorized"},
)


@dataclass(frozen=True)
class Sample:
    seconds: float
    series: int
    server_series: int
    fds: int
    rss_kib: int
    up: float


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure(exp: Process, started: float) -> Sample:
    text = httpx.get(f"{exp.url}/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    up = next(float(line.split()[-1]) for line in lines if line.startswith("evotic_up "))
    pid = exp.popen.pid
    return Sample(
        seconds=round(time.monotonic() - started, 1),
        series=len(lines),
        server_series=sum('server_id="' in line for line in lines),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        rss_kib=_rss_kib(pid),
        up=up,
    )


@dataclass(frozen=True)
class Verdict:
    flat: bool
    reasons: tuple[str, ...]


def assess(samples: list[Sample]) -> Verdict:
    """Flat means the last third of the run is no larger than the first third (after warm-up).

    Allowances: series may vary by 10 % (installing servers have no usage series), file
    descriptors by 4 (connections in flight), resident memory by 10 % or 8 MiB.
    """
    steady = samples[len(samples) // 5 :]
    third = max(1, len(steady) // 3)
    first, last = steady[:third], steady[-third:]
    reasons = []

    def peak(part: list[Sample], field: str) -> float:
        return max(getattr(sample, field) for sample in part)

    if peak(last, "server_series") > 1.1 * peak(first, "server_series"):
        reasons.append("server series grew")
    if peak(last, "fds") > peak(first, "fds") + 4:
        reasons.append("open file descriptors grew")
    rss_first = statistics.median(s.rss_kib for s in first)
    rss_last = statistics.median(s.rss_kib for s in last)
    if rss_last > rss_first + max(0.10 * rss_first, 8 * 1024):
        reasons.append(f"resident memory grew from {rss_first:.0f} to {rss_last:.0f} KiB")
    if not any(s.up == 0 for s in samples) or not any(s.up == 1 for s in samples):
        reasons.append("faults were not seen switching evotic_up")
    return Verdict(not reasons, tuple(reasons))


def soak(duration: float, servers: int, fault_period: float, workdir: Path,
         out: list[Sample], echo: bool = True) -> Verdict:  # fmt: skip
    with (
        simulator(workdir, "--servers", str(servers), "--churn-interval", "1", token=TOKEN) as sim,
        exporter(workdir, "--api.url", f"{sim.url}/api/v1", "--poll.interval", "1",
                 "--api.timeout", "1", "--collector.status", "--collector.status.interval", "2",
                 "--poll.stale-after", "3600", env={"EVOTIC_API_TOKEN": TOKEN}) as exp,
    ):  # fmt: skip
        started = time.monotonic()
        next_switch = started + fault_period
        cycle = 0
        faulty = False
        while time.monotonic() - started < duration:
            if time.monotonic() >= next_switch:
                httpx.delete(f"{sim.url}/_simulator/faults")
                if not faulty:
                    fault = {**FAULT_CYCLE[cycle % len(FAULT_CYCLE)], "scope": "servers"}
                    httpx.post(f"{sim.url}/_simulator/faults", json=fault).raise_for_status()
                    cycle += 1
                faulty = not faulty
                next_switch += fault_period
            sample = measure(exp, started)
            out.append(sample)
            if echo:
                print(json.dumps(asdict(sample)), flush=True)
            time.sleep(1.0)
        httpx.delete(f"{sim.url}/_simulator/faults")
    return assess(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300, help="seconds (default 300)")
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--fault-period", type=float, default=5, help="seconds on, then off")
    parser.add_argument("--report", type=Path, help="write the samples here as JSON")
    args = parser.parse_args(argv)
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as workdir:
        verdict = soak(args.duration, args.servers, args.fault_period, Path(workdir), samples)
    if args.report:
        args.report.write_text(json.dumps([asdict(s) for s in samples], indent=1))
    print("flat" if verdict.flat else "NOT FLAT: " + "; ".join(verdict.reasons))
    return 0 if verdict.flat else 1


if __name__ == "__main__":
    sys.exit(main())
