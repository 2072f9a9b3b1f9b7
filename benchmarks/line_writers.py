"""Side by side: the exposition's compiled line writers against plain ``%`` formatting.

``exporter/exposition/render.py`` fills the sample lines of the families read through
``MetricDef.samples`` (info, status, IP, processing and progress series) with one function per
family that it compiles from the family's template. This measures whether that earns its place:
the same snapshot rendered with those writers and with a writer that fills the template with
``%`` and a tuple per sample, alternating, at each fleet size.

    python -m benchmarks.line_writers [--servers 10000 50000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable

from exporter.api.client import parse_listing_page
from exporter.exposition import render
from exporter.exposition.render import HOST, ID, PAIR, Template, render_snapshot
from exporter.polling.snapshot import Snapshot
from exporter.settings.quotas import Quotas, billing_period
from simulator.fleet import Fleet

Writer = Callable[[str, str, str, str, tuple[str, ...], Callable[[str], str]], str]


def percent_writer(shape: Template) -> Writer:
    """The template filled with ``%``: what the compiled writers replace."""
    text, slots = shape.text, shape.slots

    def line(
        pair: str, host: str, id_: str, value: str, labels: tuple[str, ...],
        escape: Callable[[str], str],
    ) -> str:  # fmt: skip
        args = [
            pair if slot == PAIR else host if slot == HOST else id_ if slot == ID
            else escape(labels[slot])
            for slot in slots
        ]  # fmt: skip
        return text % (*args, value)

    return line


def snapshot_of(servers: int) -> Snapshot:
    fleet = Fleet(time.time, servers=servers, seed=7)
    body = json.dumps({"data": fleet.listing()}).encode()
    parsed = parse_listing_page(body).servers
    now = time.time()
    return Snapshot(servers=parsed, taken_at=now, quotas=Quotas({}), period=billing_period(now, 1))


def seconds(snapshot: Snapshot, writers: dict[Template, Writer]) -> float:
    render.WRITERS.clear()
    render.WRITERS.update(writers)
    gc.collect()
    started = time.process_time()
    render_snapshot(snapshot, "text")
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    compiled = dict(render.WRITERS)
    plain = {shape: percent_writer(shape) for shape in compiled}
    try:
        for size in args.servers:
            snapshot = snapshot_of(size)
            render.WRITERS.update(plain)
            assert render_snapshot(snapshot, "text") == (
                render.WRITERS.update(compiled) or render_snapshot(snapshot, "text")
            ), "the two writers must write the same bytes"
            times: dict[str, list[float]] = {"compiled": [], "percent": []}
            for _ in range(args.repeats):
                times["compiled"].append(seconds(snapshot, compiled))
                times["percent"].append(seconds(snapshot, plain))
            fast, slow = (statistics.median(times[k]) for k in ("compiled", "percent"))
            print(f"{size} servers: render (text) compiled {fast * 1000:.0f} ms, "
                  f"% {slow * 1000:.0f} ms, ratio {slow / fast:.2f}")  # fmt: skip
    finally:
        render.WRITERS.clear()
        render.WRITERS.update(compiled)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
