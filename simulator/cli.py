"""``evotic-simulator``: serve the simulated Evotic API until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from exporter.settings.model import format_address, parse_listen_address
from exporter.web.server import quiet_server_loggers
from simulator.faults import FAULT_KINDS, Scope
from simulator.runner import RunningSimulator, SimulatorOptions, start_simulator

PROG = "evotic-simulator"
TOKEN_ENV = "EVOTIC_SIMULATOR_TOKEN"  # noqa: S105 - the variable's name, not a secret

log = logging.getLogger("simulator")


def _fault(text: str) -> tuple[str, str]:
    kind, _, scope = text.partition(":")
    if kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
    scope = scope or Scope.ALL.value
    if scope not in {s.value for s in Scope}:
        raise argparse.ArgumentTypeError(
            f"unknown scope {scope!r}; known: {', '.join(s.value for s in Scope)}"
        )
    return kind, scope


def build_parser() -> argparse.ArgumentParser:
    defaults = SimulatorOptions()
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve a simulated Evotic API for demos and tests."
    )
    parser.add_argument(
        "--listen-address",
        default="127.0.0.1:8980",
        help="host:port to listen on (default: %(default)s)",
    )
    parser.add_argument("--servers", type=int, default=defaults.servers, help="fleet size")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="fleet seed")
    parser.add_argument(
        "--token", help=f"bearer token clients must send (default: ${TOKEN_ENV}, else a demo token)"
    )
    parser.add_argument("--paginate", action="store_true", help="answer the listing page by page")
    parser.add_argument("--per-page", type=int, default=defaults.per_page, help="page size")
    parser.add_argument(
        "--churn-interval",
        type=float,
        default=defaults.churn_interval,
        help="seconds between deleting, creating and renaming a server (0: never)",
    )
    parser.add_argument(
        "--latency", type=float, default=defaults.latency, help="seconds added to every answer"
    )
    parser.add_argument(
        "--rate-limit", type=int, default=defaults.rate_limit,
        help="requests allowed per window, with X-RateLimit-* headers and 429 beyond (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--rate-window", type=float, default=defaults.rate_window,
        help="seconds of a rate limit window",
    )  # fmt: skip
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="KIND[:SCOPE]",
        help=f"switch a fault on for good; kinds: {', '.join(FAULT_KINDS)}",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV) or SimulatorOptions().token
    try:
        host, port = parse_listen_address(args.listen_address)
        options = SimulatorOptions(
            servers=args.servers,
            seed=args.seed,
            token=token,
            paginate=args.paginate,
            per_page=args.per_page,
            churn_interval=args.churn_interval,
            latency=args.latency,
            rate_limit=args.rate_limit,
            rate_window=args.rate_window,
        )
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    quiet_server_loggers()
    return asyncio.run(_serve(options, host, port, args.fault))


async def _serve(
    options: SimulatorOptions, host: str, port: int, faults: list[tuple[str, str]]
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before the fleet is built: a large one takes seconds, and SIGTERM must still end cleanly.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        simulator: RunningSimulator = await start_simulator(options, host, port)
    except OSError as error:
        log.error("cannot listen on %s: %s", format_address(host, port), error.strerror)
        return 1
    for kind, scope in faults:
        simulator.faults.add(kind, scope)
        log.info("fault on: %s (scope %s)", kind, scope)
    print(
        f"{PROG}: serving {len(simulator.fleet)} servers at {simulator.url} "
        f"(controls at {simulator.control_url})",
        flush=True,
    )
    await stop.wait()
    await simulator.stop()
    return 0
