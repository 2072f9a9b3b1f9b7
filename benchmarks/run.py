"""The performance harness: the exporter next to nginx and a prometheus_client peer.

    python benchmarks/run.py                        # 1,000, 10,000 and 50,000 servers, and
                                                    # ten accounts of 1,000 in one exporter
    python benchmarks/run.py --sizes 10000 --accounts none   # one size
    python benchmarks/run.py --sizes none           # the ten accounts only
    python benchmarks/run.py --smoke --output DIR   # 1,000 servers, 3 accounts of 100 (CI)

For each size it starts the simulator with that many servers and then, one after another so
that they never compete for the two cores:

1. validate + render in this process, timed in CPU seconds (what one poll costs);
2. the exporter with one poll only: first answers after the poll, then scrape latency
   (plain and gzip; one scraper and four at once);
3. nginx serving a captured copy of that exporter's own ``/metrics`` answer (plain, and the
   gzip answer as a pre-compressed file), measured the same way;
4. the exporter again, polling every few seconds: the poll phases it reports
   (``evotic_poll_phase_duration_seconds``), then polls under four concurrent scrapers for
   the peak resident memory;
5. the prometheus_client reference (``reference_exporter.py``), measured the same way with
   smaller request budgets (a scrape takes seconds there).

Then, for ``--accounts``, one exporter serving several accounts (``bench_accounts``): each
account's ``/probe`` against nginx serving its captured answers, and the peak memory.

Results go to ``results/latest.json`` and ``results/accounts.json`` and, as tables, into
``README.md`` between the ``results`` and the ``accounts`` markers (``--output`` and
``--no-readme`` change that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import scraper  # noqa: E402
import services  # noqa: E402
from services import Service, running  # noqa: E402

from exporter.api.client import parse_listing_page  # noqa: E402
from exporter.exposition.render import Exposition, compress_open  # noqa: E402
from exporter.polling.snapshot import Snapshot  # noqa: E402
from exporter.settings.quotas import Quotas, billing_period  # noqa: E402

MODES = (("plain", 1), ("plain", 4), ("gzip", 1), ("gzip", 4))
OWN_METRICS_START = b"# HELP evotic_up "
MB = 1024 * 1024


# ----------------------------------------------------------------------------- settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000,10000,50000", help="fleet sizes, comma-separated ('none': skip)"
    )
    parser.add_argument(
        "--accounts",
        default="10x1000",
        metavar="ACCOUNTSxSERVERS",
        help="accounts in one exporter (--config.file), each of that many servers ('none': skip)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="1,000 servers and 3 accounts of 100, with small budgets, for CI (about a minute)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "results",
        help="directory for latest.json, accounts.json and the run's logs",
    )
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument("--requests", type=int, default=400, help="budget per scrape mode")
    parser.add_argument("--seconds", type=float, default=8.0, help="time per scrape mode")
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternating exporter/nginx windows per mode"
    )
    parser.add_argument(
        "--reference-requests",
        type=int,
        default=8,
        help="budget per mode for the prometheus_client reference",
    )
    parser.add_argument("--reference-seconds", type=float, default=20.0)
    parser.add_argument("--polls", type=int, default=4, help="polls whose phases are kept")
    parser.add_argument("--cpu-repeats", type=int, default=5, help="in-process poll repeats")
    parser.add_argument(
        "--listing",
        choices=("paginated", "array"),
        default="paginated",
        help="the simulator's listing: pages of 1,000 or one bare array",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip prometheus_client")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SERVERS",
        help="also profile a poll (pyinstrument) and scrapes (py-spy) at this "
        "size, into benchmarks/profiles/",
    )
    parser.add_argument(
        "--profile-accounts",
        action="store_true",
        help="also profile the first account's /probe (py-spy) in the accounts scenario",
    )
    parser.add_argument(
        "--status-sweep",
        type=int,
        default=0,
        metavar="SERVERS",
        help="also time a full status sweep against this many servers",
    )
    parser.add_argument(
        "--status-latency",
        type=float,
        default=0.05,
        help="simulated API latency for the status sweep, seconds",
    )
    parser.add_argument("--status-concurrency", type=int, default=4)
    return parser


def settings(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.sizes, args.accounts = "1000", "3x100"
        args.requests, args.seconds, args.rounds = 60, 1.5, 2
        args.reference_requests, args.reference_seconds = 4, 3.0
        args.polls, args.cpu_repeats = 2, 2
    skip = ("", "none", "0")
    sizes = "" if args.sizes.strip() in skip else args.sizes
    args.size_list = [int(size) for size in sizes.split(",") if size.strip()]
    args.account_fleets = None
    if args.accounts.strip() not in skip:
        found = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", args.accounts)
        if not found or int(found.group(1)) < 1 or int(found.group(2)) < 1:
            build_parser().error(f"--accounts: expected ACCOUNTSxSERVERS, got {args.accounts!r}")
        args.account_fleets = (int(found.group(1)), int(found.group(2)))
    return args


# ----------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
    nginx = subprocess.run([services.NGINX, "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(total.group(1)) / 1024 / 1024, 1) if total else None,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "nginx": nginx.stderr.strip().removeprefix("nginx version: "),
    }


def commit() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=HERE.parent,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=HERE.parent,
        check=False,
    )
    return found.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


# ----------------------------------------------------------------------------- measuring


def own_metrics(body: bytes) -> dict[str, float]:
    """The exporter's own samples (the tail of ``/metrics``), by name with labels."""
    tail = body[body.rindex(OWN_METRICS_START) :].decode()
    samples = {}
    for line in tail.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def fetch_own(service: Service, path: str = "/metrics") -> dict[str, float]:
    return own_metrics(scraper.fetch("127.0.0.1", service.port, path).body)


def listing_pages(api_url: str) -> list[bytes]:
    """Every page of the listing as the API sends it, to validate in this process."""
    pages = []
    url: str | None = f"{api_url}/servers"
    while url:
        match = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
        assert match, url
        answer = scraper.fetch(
            match.group(1),
            int(match.group(2)),
            match.group(3),
            {"Authorization": f"Bearer {services.TOKEN}"},
        )
        pages.append(answer.body)
        url = parse_listing_page(answer.body).next_url
    return pages


def poll_cpu(pages: list[bytes], repeats: int) -> dict[str, Any]:
    """CPU seconds of validate and render as the poller does them, previous poll kept alive."""
    timings: dict[str, list[float]] = {"validate": [], "render": [], "openmetrics": [], "gzip": []}
    previous: Exposition | None = None
    samples = 0
    for _ in range(repeats):
        started = time.process_time()
        servers = tuple(server for page in pages for server in parse_listing_page(page).servers)
        timings["validate"].append(time.process_time() - started)
        now = time.time()
        snapshot = Snapshot(
            servers=servers, taken_at=now, quotas=Quotas({}), period=billing_period(now, 1)
        )
        started = time.process_time()
        exposition = Exposition(snapshot)
        timings["render"].append(time.process_time() - started)
        started = time.process_time()
        om = asyncio.run(exposition.body("openmetrics"))
        timings["openmetrics"].append(time.process_time() - started)
        started = time.process_time()
        compress_open(exposition.text)
        timings["gzip"].append(time.process_time() - started)
        samples = exposition.series
        del om
        previous = exposition
    # The same with the cyclic garbage collector off: what the work itself costs, so that
    # the collector's share (it walks every live record, old snapshot included) shows.
    timings["validate_render_no_gc"] = []
    for _ in range(max(2, repeats // 2)):
        gc.disable()
        try:
            started = time.process_time()
            servers = tuple(s for page in pages for s in parse_listing_page(page).servers)
            exposition = Exposition(Snapshot(servers=servers, taken_at=time.time()))
            timings["validate_render_no_gc"].append(time.process_time() - started)
        finally:
            gc.enable()
        previous = exposition
    del previous, exposition, servers, snapshot
    gc.collect()
    result = {f"{k}_cpu_s": round(statistics.median(v), 4) for k, v in timings.items()}
    result["validate_render_cpu_s"] = round(
        statistics.median(
            v + r for v, r in zip(timings["validate"], timings["render"], strict=True)
        ),
        4,
    )
    result["samples"] = samples
    return result


def scrape_modes(
    targets: dict[str, Service],
    requests: int,
    seconds: float,
    rounds: int = 1,
    warmup: int = 1,
    path: str = "/metrics",
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every mode against every target, in ``rounds`` alternating windows per mode.

    Other work on the machine comes and goes over minutes; alternating short windows lets
    the targets share it rather than one of them catching all of it.
    """
    runs: dict[str, dict[str, scraper.Run]] = {name: {} for name in targets}
    for encoding, workers in MODES:
        mode = f"{encoding}_{workers}"
        for _ in range(rounds):
            for name, service in targets.items():
                run = scraper.measure(
                    "127.0.0.1",
                    service.port,
                    path,
                    gzip=encoding == "gzip",
                    workers=workers,
                    max_requests=-(-requests // rounds),
                    max_seconds=seconds / rounds,
                    warmup=warmup,
                )
                runs[name].setdefault(mode, scraper.Run()).add(run)
                service.check_alive()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name, by_mode in runs.items():
        results[name] = {}
        for mode, run in by_mode.items():
            results[name][mode] = run.summary()
            if run.errors:
                results[name][mode]["first_error"] = run.errors[0]
    return results


def timed_fetch(service: Service, gzip: bool, path: str = "/metrics") -> tuple[float, bytes]:
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    started = time.perf_counter()
    answer = scraper.fetch("127.0.0.1", service.port, path, headers)
    return (time.perf_counter() - started) * 1000, answer.body


def measure_polls(service: Service, interval: float, polls: int) -> dict[str, Any]:
    """Phases of ``polls`` successive polls, read once each in the quiet part of the cycle.

    The poller starts a poll every ``interval`` seconds; the last one's end and duration
    (own metrics) tell when the next starts, so each reading lands between two polls.
    """
    phases: dict[str, list[float]] = {}
    durations = []
    cpu_before = service.cpu_seconds()
    seen = fetch_own(service)["evotic_last_successful_poll_timestamp_seconds"]
    kept = 0
    wall_start = time.monotonic()
    while kept < polls:
        own = fetch_own(service)
        last = own["evotic_last_successful_poll_timestamp_seconds"]
        if last == seen:
            started = last - own["evotic_poll_duration_seconds"]
            time.sleep(max(0.2, started + interval * 1.5 - time.time()))
            service.check_alive()
            if time.monotonic() - wall_start > interval * (polls + 3) + 120:
                raise TimeoutError("the exporter stopped polling")
            continue
        seen = last
        kept += 1
        durations.append(own["evotic_poll_duration_seconds"])
        for key, value in own.items():
            found = re.match(r'evotic_poll_phase_duration_seconds\{phase="(\w+)"\}', key)
            if found:
                phases.setdefault(found.group(1), []).append(value)
    cpu = service.cpu_seconds() - cpu_before
    return {
        "polls": kept,
        "interval_s": interval,
        "duration_s": round(statistics.median(durations), 4),
        "phases_s": {k: round(statistics.median(v), 4) for k, v in phases.items()},
        "process_cpu_per_poll_s": round(cpu / kept, 4),
    }


def stress(
    service: Service, seconds: float, paths: Sequence[str] = ("/metrics",)
) -> dict[str, Any]:
    """Two plain and two gzip scrapers for ``seconds``, through at least one poll; each asks
    for ``paths`` in turn."""
    runs: dict[str, scraper.Run] = {}

    def one(encoding: str) -> None:
        runs[encoding] = scraper.measure(
            "127.0.0.1",
            service.port,
            paths,
            gzip=encoding == "gzip",
            workers=2,
            max_requests=10**9,
            max_seconds=seconds,
        )

    threads = [threading.Thread(target=one, args=(e,)) for e in ("plain", "gzip")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {k: run.summary() for k, run in runs.items()}


# ----------------------------------------------------------------------------- one size


def bench_size(servers: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    log = lambda message: print(f"[{servers:>6} servers] {message}", flush=True)  # noqa: E731
    result: dict[str, Any] = {"servers": servers, "load_average_start": os.getloadavg()[0]}
    paginate = args.listing == "paginated"
    with running(services.simulator(workdir, servers, paginate=paginate, per_page=1000)) as sim:
        api = f"{sim.url}/api/v1"

        log("validate + render in process")
        pages = listing_pages(api)
        result["listing"] = {"pages": len(pages), "bytes": sum(len(page) for page in pages)}
        result["cpu"] = poll_cpu(pages, args.cpu_repeats)
        if args.profile == servers:
            profile_poll(pages, servers)
        del pages
        gc.collect()

        log("exporter and nginx (the same bytes): scrapes")
        with running(
            services.exporter(workdir, api, interval=3600, name=f"exporter-{servers}")
        ) as exp:
            first_poll = fetch_own(exp)["evotic_poll_duration_seconds"]
            plain_ms, plain = timed_fetch(exp, gzip=False)
            gzip_ms, packed = timed_fetch(exp, gzip=True)
            again_ms, _ = timed_fetch(exp, gzip=True)
            result["first_answer_after_poll_ms"] = {
                "plain": round(plain_ms, 2),
                "gzip": round(gzip_ms, 2),
                "gzip_second": round(again_ms, 2),
            }
            result["payload"] = check_payload(plain, packed)
            with running(services.nginx(workdir, plain, packed)) as static:
                served_plain = scraper.fetch("127.0.0.1", static.port, "/metrics").body
                served_gzip = scraper.fetch(
                    "127.0.0.1", static.port, "/metrics", {"Accept-Encoding": "gzip"}
                ).body
                result["payload"]["static_identical"] = (
                    served_plain == plain and served_gzip == packed
                )
                del plain, packed, served_plain, served_gzip
                result["scrape"] = scrape_modes(
                    {"exporter": exp, "static": static}, args.requests, args.seconds, args.rounds
                )
            if args.profile == servers:
                profile_scrapes(exp, f"scrape-{servers}", f"{servers:,} servers", args.seconds,
                                workdir)  # fmt: skip
            rss_scrapes = exp.peak_rss_bytes()

        interval = max(2.0, round(4 * first_poll, 1))
        log(f"exporter: polls every {interval} s")
        with running(
            services.exporter(workdir, api, interval=interval, name=f"exporter-polls-{servers}")
        ) as exp:
            result["poll"] = measure_polls(exp, interval, args.polls)
            log("exporter: polls under four scrapers")
            result["poll"]["under_load"] = stress(exp, 2.5 * interval)
            rss_polls = exp.peak_rss_bytes()
        result["peak_rss_mb"] = {
            "exporter": round(max(rss_scrapes, rss_polls) / MB, 1),
            "exporter_scrapes_only": round(rss_scrapes / MB, 1),
        }

        if not args.no_reference:
            log("prometheus_client reference")
            with running(services.reference(workdir, api, servers)) as ref:
                plain_ref = scraper.fetch("127.0.0.1", ref.port, "/metrics").body
                result["payload"]["reference_plain_bytes"] = len(plain_ref)
                result["payload"]["reference_samples"] = sum(
                    1 for line in plain_ref.splitlines() if line and not line.startswith(b"#")
                )
                del plain_ref
                result["scrape"] |= scrape_modes(
                    {"reference": ref}, args.reference_requests, args.reference_seconds, warmup=0
                )
                result["peak_rss_mb"]["reference"] = round(ref.peak_rss_bytes() / MB, 1)
    result["ratios"] = ratios(result["scrape"])
    result["load_average_end"] = os.getloadavg()[0]
    log("done")
    return result


def check_payload(plain: bytes, packed: bytes) -> dict[str, Any]:
    unpacked = zlib.decompress(packed, wbits=31)
    per_server = plain[: plain.index(OWN_METRICS_START)]
    return {
        "plain_bytes": len(plain),
        "gzip_bytes": len(packed),
        "samples": sum(1 for line in plain.splitlines() if line and not line.startswith(b"#")),
        "gzip_decodes_to_same_series": unpacked.startswith(per_server),
        # Tells fleets apart: each account must be served its own servers.
        "series_sha256": hashlib.sha256(per_server).hexdigest(),
    }


def ratios(scrape: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Exporter over static (lower is better) and reference over exporter (higher is better)."""
    out: dict[str, dict[str, float]] = {}
    ours = scrape["exporter"]
    for mode, stats in ours.items():
        entry: dict[str, float] = {}
        if "median_ms" not in stats:
            continue
        static = scrape.get("static", {}).get(mode, {})
        if static.get("median_ms"):
            entry["median_vs_static"] = round(stats["median_ms"] / static["median_ms"], 2)
            entry["p99_vs_static"] = round(stats["p99_ms"] / static["p99_ms"], 2)
        reference = scrape.get("reference", {}).get(mode, {})
        if reference.get("median_ms"):
            entry["reference_median_vs_ours"] = round(
                reference["median_ms"] / stats["median_ms"], 1
            )
        entry["p99_vs_median"] = round(stats["p99_ms"] / stats["median_ms"], 2)
        out[mode] = entry
    return out


# ----------------------------------------------------------------------------- several accounts

LAST_POLL = "evotic_last_successful_poll_timestamp_seconds"


def account_names(count: int) -> list[str]:
    width = max(2, len(str(count)))
    return [f"account-{n:0{width}d}" for n in range(1, count + 1)]


def write_accounts_file(directory: Path, apis: dict[str, str], tokens: dict[str, str]) -> Path:
    """The exporter's ``--config.file``: each account's API and a token file of its own."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["accounts:"]
    for name, api in apis.items():
        token_file = directory / f"{name}.token"
        # Readable by its owner only, or the exporter warns at start-up.
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(tokens[name] + "\n")
        # A JSON string is a YAML string: quoted, whatever the path holds.
        lines += [f"  {name}:", f"    token_file: {json.dumps(str(token_file))}",
                  f"    api_url: {json.dumps(api)}"]  # fmt: skip
    config = directory / "accounts.yml"
    config.write_text("\n".join(lines) + "\n")
    return config


def bench_accounts(
    count: int, servers: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """``count`` accounts of ``servers`` servers each, served by one exporter.

    Each account has a simulator process of its own (its own fleet, by seed, and its own
    token), so the exporter polls ``count`` APIs as it would ``count`` real accounts. Each
    account's ``/probe`` is measured against nginx serving that account's captured answers
    at the same URL, one account after the other, in the modes and budgets of a fleet size.
    """
    label = f"{count} accounts x {servers}"
    log = lambda message: print(f"[{label}] {message}", flush=True)  # noqa: E731
    names = account_names(count)
    paths = {name: f"/probe?target={name}" for name in names}
    tokens = {name: secrets.token_hex(12) for name in names}
    result: dict[str, Any] = {
        "accounts": count,
        "servers_per_account": servers,
        "load_average_start": os.getloadavg()[0],
    }
    per_account: dict[str, dict[str, Any]] = {name: {} for name in names}
    with contextlib.ExitStack() as simulators:
        log(f"{count} simulators of {servers} servers")
        apis = {}
        for seed, name in enumerate(names, start=1):
            sim = simulators.enter_context(running(services.simulator(
                workdir, servers, paginate=True, per_page=1000, token=tokens[name], seed=seed,
                name=f"simulator-{name}",
            )))  # fmt: skip
            apis[name] = f"{sim.url}/api/v1"
        config = write_accounts_file(workdir / f"accounts-{count}x{servers}", apis, tokens)

        log("exporter and nginx (the same bytes): scrapes of every account")
        started = time.monotonic()
        exporter = services.accounts_exporter(
            workdir, config, interval=3600, name=f"exporter-accounts-{count}x{servers}"
        )
        with running(exporter) as exp:
            result["ready_after_s"] = round(time.monotonic() - started, 2)
            answers = {}
            for name, path in paths.items():
                own = fetch_own(exp, path)
                plain_ms, plain = timed_fetch(exp, gzip=False, path=path)
                gzip_ms, packed = timed_fetch(exp, gzip=True, path=path)
                per_account[name]["first_poll_s"] = own["evotic_poll_duration_seconds"]
                per_account[name]["first_answer_after_poll_ms"] = {
                    "plain": round(plain_ms, 2),
                    "gzip": round(gzip_ms, 2),
                }
                per_account[name]["payload"] = check_payload(plain, packed)
                answers[name] = (plain, packed)
            first = names[0]
            with (
                running(services.nginx(workdir, probes=answers)) as static,
                # The first account's answers once more, from the exporter's own server with
                # nothing behind it: the least a scrape through that server costs.
                running(services.floor(workdir, *answers[first])) as floor,
            ):
                for name, path in paths.items():
                    served_plain = scraper.fetch("127.0.0.1", static.port, path).body
                    served_gzip = scraper.fetch(
                        "127.0.0.1", static.port, path, {"Accept-Encoding": "gzip"}
                    ).body
                    per_account[name]["payload"]["static_identical"] = (
                        served_plain == answers[name][0] and served_gzip == answers[name][1]
                    )
                floor_plain = scraper.fetch("127.0.0.1", floor.port, paths[first]).body
                floor_gzip = scraper.fetch(
                    "127.0.0.1", floor.port, paths[first], {"Accept-Encoding": "gzip"}
                ).body
                result["floor_identical"] = (floor_plain, floor_gzip) == answers[first]
                del answers, plain, packed, served_plain, served_gzip, floor_plain, floor_gzip
                for name, path in paths.items():
                    log(f"scrapes of {path}")
                    targets = {"exporter": exp, "static": static}
                    if name == first:
                        targets["floor"] = floor
                    scrape = scrape_modes(targets, args.requests, args.seconds, args.rounds,
                                          path=path)  # fmt: skip
                    per_account[name]["scrape"] = scrape
                    per_account[name]["ratios"] = ratios(scrape)
                result["floor"] = floor_ratios(first, per_account[first]["scrape"])
            # The least any answer costs: three bytes, nothing rendered.
            result["healthz"] = scraper.measure(
                "127.0.0.1", exp.port, "/healthz", gzip=False, workers=1,
                max_requests=args.requests, max_seconds=args.seconds / 2,
            ).summary()  # fmt: skip
            if args.profile_accounts:
                profile_scrapes(exp, f"probe-{count}x{servers}",
                                f"{count} accounts of {servers:,} servers",
                                args.seconds, workdir, paths[names[0]])  # fmt: skip
            rss_scrapes = exp.peak_rss_bytes()
            rss_after_scrapes = exp.rss_bytes()

        # Every account polls every few first-poll durations, the pollers started within a
        # tenth of that of each other: their polls overlap, the most memory they take at once.
        interval = max(2.0, round(4 * max(a["first_poll_s"] for a in per_account.values()), 1))
        log(f"exporter: every account polls every {interval} s, under four scrapers")
        exporter = services.accounts_exporter(
            workdir, config, interval=interval, name=f"exporter-accounts-polls-{count}x{servers}"
        )
        with running(exporter) as exp:
            before = {name: fetch_own(exp, path)[LAST_POLL] for name, path in paths.items()}
            cpu_before = exp.cpu_seconds()
            under_load = stress(exp, 2.5 * interval, list(paths.values()))
            cpu = exp.cpu_seconds() - cpu_before
            after = {name: fetch_own(exp, path) for name, path in paths.items()}
            rss_polls = exp.peak_rss_bytes()
    for name in names:
        per_account[name]["poll_under_load_s"] = after[name]["evotic_poll_duration_seconds"]
    result["per_account"] = per_account
    result["poll"] = {
        "interval_s": interval,
        "under_load": under_load,
        "seconds": round(2.5 * interval, 1),
        "process_cpu_s": round(cpu, 2),
        "every_account_polled": all(after[name][LAST_POLL] > before[name] for name in names),
    }
    result["peak_rss_mb"] = {
        "exporter": round(max(rss_scrapes, rss_polls) / MB, 1),
        "exporter_scrapes_only": round(rss_scrapes / MB, 1),
        "exporter_polls_under_scrapes": round(rss_polls / MB, 1),
        "exporter_rss_after_scrapes": round(rss_after_scrapes / MB, 1),
    }
    result["worst"] = worst_ratios(per_account)
    result["load_average_end"] = os.getloadavg()[0]
    log("done")
    return result


def floor_ratios(account: str, scrape: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The floor server's medians for ``account``, over nginx's and under the exporter's."""
    modes: dict[str, dict[str, float]] = {}
    for mode, stats in scrape["floor"].items():
        floor, static = stats["median_ms"], scrape["static"][mode]["median_ms"]
        modes[mode] = {
            "median_ms": floor,
            "floor_vs_static": round(floor / static, 2),
            "exporter_vs_floor": round(scrape["exporter"][mode]["median_ms"] / floor, 2),
        }
    return {"account": account, "modes": modes}


def worst_ratios(per_account: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each mode, the account whose ``/probe`` is furthest from nginx (median and p99)."""
    worst: dict[str, dict[str, Any]] = {}
    for encoding, workers in MODES:
        mode = f"{encoding}_{workers}"
        ratios_of = {name: a["ratios"].get(mode, {}) for name, a in per_account.items()}
        measured = {name: r for name, r in ratios_of.items() if "median_vs_static" in r}
        if not measured:
            continue
        median = max(measured, key=lambda name: measured[name]["median_vs_static"])
        p99 = max(measured, key=lambda name: measured[name]["p99_vs_static"])
        worst[mode] = {
            "median_vs_static": measured[median]["median_vs_static"],
            "median_account": median,
            "p99_vs_static": measured[p99]["p99_vs_static"],
            "p99_account": p99,
        }
    return worst


# ----------------------------------------------------------------------------- profiles

PROFILES = HERE / "profiles"


def profile_poll(pages: list[bytes], servers: int) -> None:
    """A pyinstrument profile of validate + render (CPU only), as text."""
    from pyinstrument import Profiler

    PROFILES.mkdir(exist_ok=True)
    profiler = Profiler(interval=0.0005)
    with profiler:
        parsed = tuple(server for page in pages for server in parse_listing_page(page).servers)
        now = time.time()
        Exposition(Snapshot(servers=parsed, taken_at=now, period=billing_period(now, 1)))
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    (PROFILES / f"poll-{servers}.txt").write_text(text)


def profile_scrapes(
    service: Service, what: str, fleet: str, seconds: float, workdir: Path, path: str = "/metrics"
) -> None:
    """py-spy samples of the exporter while one scraper asks for ``path``, plain then gzip;
    ``what`` names the files (``scrape-10000``: ``scrape-plain-10000.txt``), ``fleet`` what
    the exporter serves.

    Writes a summary of where the samples fall, by function, including the time the event
    loop waited in select; the collapsed stacks (for flamegraph.pl or speedscope) stay in
    the run's work directory.
    """
    PROFILES.mkdir(exist_ok=True)
    for encoding in ("plain", "gzip"):
        name = what.replace("-", f"-{encoding}-", 1)
        raw = workdir / f"{name}.collapsed"
        spy = subprocess.Popen(
            ["py-spy", "record", "--pid", str(service.popen.pid), "--rate", "1000", "--idle",
             "--format", "raw", "--duration", str(int(seconds) + 2), "--output", str(raw),
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)
        run = scraper.measure("127.0.0.1", service.port, path, gzip=encoding == "gzip",
                              workers=1, max_requests=10**9, max_seconds=seconds)  # fmt: skip
        spy.wait(60)
        summary = summarize_collapsed(raw.read_text())
        header = (f"py-spy, 1000 Hz, exporter at {fleet}, one scraper asking for {path}, "
                  f"{encoding}, for {seconds:.0f} s: {run.summary()}\n\n")  # fmt: skip
        (PROFILES / f"{name}.txt").write_text(header + summary)


def summarize_collapsed(collapsed: str, top: int = 25) -> str:
    """Self and total share of the main thread's samples per function (lines merged).

    Idle thread-pool workers are left out; the event loop waiting in ``select`` stays in,
    so the shares add up to the scrape's wall time.
    """
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or "concurrent/futures/thread.py" in stack:
            continue
        count = int(count_text)
        samples += count
        frames = [
            re.sub(r" \((?:.*/(?:site-packages|lib/python3\.\d+)/)?(.*?)(?::\d+)?\)$", r" (\1)", f)
            for f in stack.split(";")
        ]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    lines = [f"{samples} samples of the main thread", "", "self %  total %  function"]
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{100 * count / samples:6.1f}  {100 * total[frame] / samples:7.1f}  {frame}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- status sweep


def status_sweep(servers: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """How long one sweep of every server's status takes at a realistic API latency."""
    print(
        f"[status] {servers} servers, {args.status_latency * 1000:.0f} ms per answer, "
        f"{args.status_concurrency} at once",
        flush=True,
    )
    with running(
        services.simulator(
            workdir, servers, paginate=True, per_page=1000, latency=args.status_latency
        )
    ) as sim:
        extra = [
            "--collector.status",
            "--collector.status.concurrency",
            str(args.status_concurrency),
            "--collector.status.interval",
            "86400",
        ]
        started = time.monotonic()
        with running(
            services.exporter(
                workdir,
                f"{sim.url}/api/v1",
                interval=3600,
                name=f"exporter-status-{servers}",
                extra=extra,
            )
        ) as exp:
            key = 'evotic_poll_phase_duration_seconds{phase="status"}'
            deadline = time.monotonic() + servers * args.status_latency * 2 + 300
            while True:
                own = fetch_own(exp)
                if key in own:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("no status sweep finished")
                time.sleep(1.0)
            stats = services.get_json(f"{sim.url}/_simulator/stats")
        seconds = own[key]
    return {
        "servers": servers,
        "latency_s": args.status_latency,
        "concurrency": args.status_concurrency,
        "sweep_s": round(seconds, 2),
        "statuses_per_second": round(servers / seconds, 1),
        "ideal_s": round(servers * args.status_latency / args.status_concurrency, 2),
        "wall_until_published_s": round(time.monotonic() - started, 1),
        "simulator_stats": stats,
    }


# ----------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    args = settings(argv)
    output: Path = args.output
    workdir = output / "tmp" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    # Each part has a report and a block of the README of its own, so that running one part
    # leaves the other's figures as they were measured.
    if args.size_list or args.status_sweep:
        started = time.monotonic()
        report: dict[str, Any] = {
            **run_header(),
            "settings": {
                "sizes": args.size_list,
                "smoke": args.smoke,
                "listing": args.listing,
                "requests_per_mode": args.requests,
                "seconds_per_mode": args.seconds,
                "reference_requests_per_mode": args.reference_requests,
                "reference_seconds_per_mode": args.reference_seconds,
                "polls": args.polls,
                "cpu_repeats": args.cpu_repeats,
            },
            "sizes": {},
        }
        for servers in args.size_list:
            report["sizes"][str(servers)] = bench_size(servers, args, workdir)
        if args.status_sweep:
            report["status_sweep"] = status_sweep(args.status_sweep, args, workdir)
        report["targets"] = targets(report["sizes"])
        report["seconds"] = round(time.monotonic() - started, 1)
        (output / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
        tables = markdown(report)
        print(tables)
        if not args.no_readme:
            update_readme("results", tables)
    if args.account_fleets:
        count, servers = args.account_fleets
        started = time.monotonic()
        report = {
            **run_header(),
            "settings": {
                "accounts": count,
                "servers_per_account": servers,
                "smoke": args.smoke,
                "listing": "paginated",
                "requests_per_mode": args.requests,
                "seconds_per_mode": args.seconds,
                "rounds": args.rounds,
            },
            **bench_accounts(count, servers, args, workdir),
        }
        report["goals"] = account_goals(report)
        report["seconds"] = round(time.monotonic() - started, 1)
        (output / "accounts.json").write_text(json.dumps(report, indent=2) + "\n")
        tables = markdown_accounts(report)
        print(tables)
        if not args.no_readme:
            update_readme("accounts", tables)
    return 0


def run_header() -> dict[str, Any]:
    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
    }


def targets(sizes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, where the run has the sizes they speak of."""
    found: list[dict[str, Any]] = []

    def add(name: str, measured: float, limit: float, unit: str) -> None:
        found.append(
            {
                "target": name,
                "measured": measured,
                "limit": limit,
                "unit": unit,
                "met": measured < limit,
            }
        )

    ten = sizes.get("10000")
    if ten:
        for mode in ("plain_1", "gzip_1"):
            if "median_vs_static" in ten["ratios"].get(mode, {}):
                add(
                    f"10k: scrape median vs static, {mode}",
                    ten["ratios"][mode]["median_vs_static"],
                    2.0,
                    "x",
                )
        for mode in ("plain_4", "gzip_4"):
            add(f"10k: p99 / median, {mode}", ten["ratios"][mode]["p99_vs_median"], 4.0, "x")
        add("10k: validate + render CPU", ten["cpu"]["validate_render_cpu_s"], 0.5, "s")
        add("10k: peak RSS", ten["peak_rss_mb"]["exporter"], 120, "MB")
    fifty = sizes.get("50000")
    if fifty:
        add("50k: peak RSS", fifty["peak_rss_mb"]["exporter"], 400, "MB")
    per_server = {int(n): s["cpu"]["validate_render_cpu_s"] / int(n) for n, s in sizes.items()}
    if len(per_server) >= 2:
        low, high = min(per_server), max(per_server)
        # cost ∝ servers^b: b = 1 is linear.
        b = math.log(per_server[high] * high / (per_server[low] * low)) / math.log(high / low)
        add(f"validate + render growth exponent {low}→{high}", round(b, 3), 1.1, "")
        no_gc = {int(n): s["cpu"]["validate_render_no_gc_cpu_s"] for n, s in sizes.items()}
        b = math.log(no_gc[high] / no_gc[low]) / math.log(high / low)
        found.append(
            {
                "target": f"(the same without the garbage collector {low}→{high})",
                "measured": round(b, 3),
                "limit": 1.1,
                "unit": "",
                "met": b < 1.1,
            }
        )
    return found


def _ms(stats: dict[str, Any], key: str) -> str:
    value = stats.get(key)
    return "—" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def measured_line(report: dict[str, Any]) -> str:
    m = report["machine"]
    return (
        f"Measured {report['started']} at commit `{report['commit']}` on {m['cpu']}, "
        f"{m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, {m['nginx']}, "
        f"Linux {m['kernel']}; listing {report['settings']['listing']}. "
        f"Run took {report['seconds']:.0f} s."
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [
        measured_line(report),
        "",
        "**Scrape latency**, ms, median / p99 (mode: encoding x concurrent scrapers).",
        "",
        "| servers | mode | exporter | nginx (static) | prometheus_client | exporter ÷ nginx "
        "(median) | prometheus_client ÷ exporter (median) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, size in report["sizes"].items():
        for mode, ours in size["scrape"]["exporter"].items():
            static = size["scrape"].get("static", {}).get(mode, {})
            ref = size["scrape"].get("reference", {}).get(mode, {})
            ratio = size["ratios"].get(mode, {})
            encoding, workers = mode.split("_")
            lines.append(
                f"| {int(n):,} | {encoding} x{workers} | {_ms(ours, 'median_ms')} / "
                f"{_ms(ours, 'p99_ms')} | {_ms(static, 'median_ms')} / {_ms(static, 'p99_ms')} | "
                f"{_ms(ref, 'median_ms')} / {_ms(ref, 'p99_ms')} | "
                f"{ratio.get('median_vs_static', '—')} | "
                f"{ratio.get('reference_median_vs_ours', '—')} |"
            )
    lines += [
        "",
        "**Polls, payload and memory.** CPU: validate and render timed in one process "
        "(median of repeats); phases: as the exporter reports them (wall clock, median of "
        "polls; validate is CPU time there too, fetch the rest of the wall time).",
        "",
        "| servers | samples | plain MB | gzip MB | validate CPU s | render CPU s | "
        "validate + render CPU s | µs per server (GC off) | fetch s | validate s | render s | "
        "exporter peak RSS MB | prometheus_client peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, size in report["sizes"].items():
        cpu, payload, phases = size["cpu"], size["payload"], size["poll"]["phases_s"]
        lines.append(
            f"| {int(n):,} | {payload['samples']:,} | {payload['plain_bytes'] / MB:.1f} | "
            f"{payload['gzip_bytes'] / MB:.2f} | {cpu['validate_cpu_s']:.3f} | "
            f"{cpu['render_cpu_s']:.3f} | {cpu['validate_render_cpu_s']:.3f} | "
            f"{cpu['validate_render_cpu_s'] / int(n) * 1e6:.1f} "
            f"({cpu['validate_render_no_gc_cpu_s'] / int(n) * 1e6:.1f}) | "
            f"{phases.get('fetch', 0):.3f} | "
            f"{phases.get('validate', 0):.3f} | {phases.get('render', 0):.3f} | "
            f"{size['peak_rss_mb']['exporter']:.0f} | "
            f"{size['peak_rss_mb'].get('reference', '—')} |"
        )
    lines += [
        "",
        "| servers | first plain answer after a poll, ms | first gzip answer (builds the "
        "gzip form), ms | OpenMetrics form, CPU s | gzip form, CPU s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, size in report["sizes"].items():
        first, cpu = size["first_answer_after_poll_ms"], size["cpu"]
        lines.append(
            f"| {int(n):,} | {first['plain']:.1f} | {first['gzip']:.1f} | "
            f"{cpu['openmetrics_cpu_s']:.3f} | {cpu['gzip_cpu_s']:.3f} |"
        )
    if report.get("targets"):
        lines += [
            "",
            "**Targets** (issue #4)",
            "",
            "| target | measured | limit | met |",
            "|---|---:|---:|---|",
        ]
        for t in report["targets"]:
            met = "yes" if t["met"] else "**no**"
            lines.append(
                f"| {t['target']} | {t['measured']}{t['unit']} | <{t['limit']}{t['unit']} | {met} |"
            )
    sweep = report.get("status_sweep")
    if sweep:
        lines += [
            "",
            f"**Status sweep**: {sweep['servers']:,} servers, {sweep['latency_s'] * 1000:.0f} ms "
            f"simulated latency, concurrency {sweep['concurrency']}: {sweep['sweep_s']} s "
            f"({sweep['statuses_per_second']} statuses/s; latency ÷ concurrency alone would be "
            f"{sweep['ideal_s']} s).",
        ]
    return "\n".join(lines) + "\n"


# The goals for several accounts in one process: every /probe within 1.5x of nginx serving
# the same bytes, and the peak resident memory.
PROBE_VS_STATIC = 1.5
ACCOUNTS_PEAK_RSS_MB = 130


def account_goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals, read as: for every account and mode, the exporter's median at most 1.5x
    nginx's (the worst account is the figure), and peak RSS at most 130 MB."""
    found: list[dict[str, Any]] = []
    for mode, worst in report["worst"].items():
        ratio = worst["median_vs_static"]
        found.append({
            "target": f"every /probe, median ÷ nginx, {mode} (worst account: "
                      f"{worst['median_account']})",
            "measured": ratio, "limit": PROBE_VS_STATIC, "unit": "x",
            "met": ratio <= PROBE_VS_STATIC,
        })  # fmt: skip
    rss = report["peak_rss_mb"]["exporter"]
    found.append({"target": "peak RSS", "measured": rss, "limit": ACCOUNTS_PEAK_RSS_MB,
                  "unit": "MB", "met": rss <= ACCOUNTS_PEAK_RSS_MB})  # fmt: skip
    return found


def _mode_label(mode: str) -> str:
    encoding, workers = mode.split("_")
    return f"{encoding} x{workers}"


def markdown_accounts(report: dict[str, Any]) -> str:
    count, servers = report["accounts"], report["servers_per_account"]
    per_account = report["per_account"]
    modes = [f"{encoding}_{workers}" for encoding, workers in MODES]
    lines = [
        measured_line(report),
        "",
        f"**{count} accounts of {servers:,} servers in one exporter**: `/probe?target=NAME`, "
        "exporter median ÷ nginx median (ms) = ratio, per account and mode (encoding x "
        "concurrent scrapers).",
        "",
        "| account | samples | plain MB | gzip MB | "
        + " | ".join(_mode_label(mode) for mode in modes) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(modes),
    ]  # fmt: skip
    for name, account in per_account.items():
        payload, cells = account["payload"], []
        for mode in modes:
            ours = account["scrape"]["exporter"].get(mode, {})
            static = account["scrape"]["static"].get(mode, {})
            ratio = account["ratios"].get(mode, {}).get("median_vs_static", "—")
            cells.append(f"{_ms(ours, 'median_ms')} ÷ {_ms(static, 'median_ms')} = {ratio}")
        lines.append(
            f"| {name} | {payload['samples']:,} | {payload['plain_bytes'] / MB:.2f} | "
            f"{payload['gzip_bytes'] / MB:.2f} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "| mode | exporter median, ms (accounts' range) | nginx median, ms (range) | "
        "worst median ÷ nginx | worst p99 ÷ nginx p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, worst in report["worst"].items():
        ours = [a["scrape"]["exporter"][mode]["median_ms"] for a in per_account.values()]
        static = [a["scrape"]["static"][mode]["median_ms"] for a in per_account.values()]
        lines.append(
            f"| {_mode_label(mode)} | {_range(ours)} | {_range(static)} | "
            f"{worst['median_vs_static']} ({worst['median_account']}) | "
            f"{worst['p99_vs_static']} ({worst['p99_account']}) |"
        )
    poll, rss = report["poll"], report["peak_rss_mb"]
    first = [a["first_poll_s"] for a in per_account.values()]
    loaded = [a["poll_under_load_s"] for a in per_account.values()]
    under = poll["under_load"]
    lines += [
        "",
        f"An answer of three bytes (`/healthz`) takes {_ms(report['healthz'], 'median_ms')} ms "
        f"(median): what any answer costs the exporter before it has sent a byte of metrics.",
        "",
        *floor_lines(report["floor"]),
        f"**Polls and memory.** Ready (`/readyz`: every account's first poll in) "
        f"{report['ready_after_s']:.1f} s after the process started (each poller starts "
        f"after a random delay of up to a tenth of its interval, at most 5 s), polls of "
        f"{_range(first, 's', 3)}. Peak RSS "
        f"(`VmHWM`) once every account has polled and "
        f"been scraped: {rss['exporter_scrapes_only']:.0f} MB "
        f"({rss['exporter_rss_after_scrapes']:.0f} MB resident at the end). Every account "
        f"polling every {poll['interval_s']} s (started within "
        f"{0.1 * poll['interval_s']:.1f} s of each other, so that their polls overlap), "
        f"under two plain and two gzip scrapers going round the accounts for "
        f"{poll['seconds']} s: polls of {_range(loaded, 's', 3)}, scrapes plain "
        f"{_ms(under['plain'], 'median_ms')} / {_ms(under['plain'], 'p99_ms')} ms and gzip "
        f"{_ms(under['gzip'], 'median_ms')} / {_ms(under['gzip'], 'p99_ms')} ms (median / p99), "
        f"peak RSS {rss['exporter_polls_under_scrapes']:.0f} MB"
        + ("" if poll["every_account_polled"] else "; **not every account polled**") + ".",
        "",
        f"**Goals** ({count} accounts of {servers:,} servers in one process)",
        "",
        "| goal | measured | limit | met |",
        "|---|---:|---:|---|",
    ]  # fmt: skip
    for goal in report["goals"]:
        met = "yes" if goal["met"] else "**no**"
        lines.append(f"| {goal['target']} | {goal['measured']}{goal['unit']} | "
                     f"≤{goal['limit']}{goal['unit']} | {met} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def floor_lines(floor: dict[str, Any]) -> list[str]:
    """The floor server's table: its median, its ratio to nginx's, the exporter's to its."""
    lines = [
        f"**The server's floor.** The exporter's own server (`AsgiServer`: Hypercorn with its "
        f"limits and `Guard`) sending {floor['account']}'s answers from an app that does "
        f"nothing else (`floor.py`), in the same alternating windows:",
        "",
        "| mode | floor median, ms | floor ÷ nginx | exporter ÷ floor |",
        "|---|---:|---:|---:|",
    ]
    for mode, figures in floor["modes"].items():
        ratios = f"{figures['floor_vs_static']} | {figures['exporter_vs_floor']}"
        lines.append(f"| {_mode_label(mode)} | {_ms(figures, 'median_ms')} | {ratios} |")
    return [*lines, ""]


def _range(values: list[float], unit: str = "", digits: int = 0) -> str:
    """The lowest and highest value, joined by a dash (one figure if they are equal): ms as
    ``_ms`` writes them, else to ``digits`` places."""
    shown = [
        f"{v:.{digits}f}" if digits else _ms({"v": v}, "v") for v in (min(values), max(values))
    ]
    text = shown[0] if shown[0] == shown[1] else "\N{EN DASH}".join(shown)
    return f"{text} {unit}".strip()


def update_readme(block: str, tables: str) -> None:
    """``tables`` between the README's ``block`` markers."""
    readme = HERE / "README.md"
    text = readme.read_text()
    begin, end = f"<!-- {block}:begin -->\n", f"<!-- {block}:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"benchmarks/README.md has no {block} markers")
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    readme.write_text(head + begin + tables + end + tail)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
