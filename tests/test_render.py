"""The renderer: golden exposition files, and byte equality with prometheus_client."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import math
import os
import random

import pytest

from exporter.api.client import parse_listing_page
from exporter.api.models import ServerStatus
from exporter.exposition.families import (
    SERVER_CPU_USAGE,
    SERVER_DISK_USED,
    SERVER_MEMORY_USED,
    SERVER_TRAFFIC,
    SERVER_TRAFFIC_EXCEEDED,
    SERVER_TRAFFIC_PREVIOUS,
)
from exporter.exposition.render import (
    Exposition,
    Format,
    floatToGoString,
    openmetrics_from_text,
    render_snapshot,
)
from exporter.exposition.render import go_float as _go_float
from exporter.polling.snapshot import Snapshot
from exporter.settings.quotas import Quotas, Rule
from simulator.fleet import Fleet

from .conftest import GOLDEN
from .reference import client_render as _client_render
from .reference import render_families, server_samples


@pytest.mark.parametrize(
    ("fmt", "golden"), [("text", "servers.prom"), ("openmetrics", "servers.om")]
)
def test_render_matches_golden_file(sample_snapshot: Snapshot, fmt: Format, golden: str) -> None:
    rendered = render_families(server_samples(sample_snapshot), fmt)
    path = GOLDEN / golden
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rendered)
    assert rendered.decode() == path.read_text(encoding="utf-8")


def test_label_values_are_escaped_exactly_as_sent(sample_snapshot: Snapshot) -> None:
    text = render_families(server_samples(sample_snapshot), "text").decode()
    assert 'hostname="bücher \\"db\\" \\\\ primary\\nline"' in text
    assert 'hostname="サーバー-7"' in text


def test_server_without_usage_has_no_usage_series(sample_snapshot: Snapshot) -> None:
    families = server_samples(sample_snapshot)
    usage = (SERVER_CPU_USAGE, SERVER_MEMORY_USED, SERVER_DISK_USED, SERVER_TRAFFIC,
             SERVER_TRAFFIC_PREVIOUS, SERVER_TRAFFIC_EXCEEDED)  # fmt: skip
    for metric, samples in families.items():
        if metric in usage:
            assert all(labels[0] != "2" for labels, _ in samples), metric.name


def test_units_are_converted_to_base_units(sample_snapshot: Snapshot) -> None:
    families = {m.name: dict(samples) for m, samples in server_samples(sample_snapshot).items()}
    key = ("1", "srv-evotic")
    assert families["evotic_server_memory_bytes"][key] == 2048 * 2**20
    assert families["evotic_server_disk_bytes"][key] == 20 * 2**30
    assert families["evotic_server_cpu_usage_ratio"][key] == pytest.approx(0.125)
    assert families["evotic_server_memory_used_bytes"][key] == 1456 * 2**20
    assert families["evotic_server_disk_used_bytes"][key] == pytest.approx(17.1 * 2**30)
    assert families["evotic_server_created_timestamp_seconds"][key] == 1699035782.0
    assert families["evotic_server_traffic_bytes_total"][(*key, "incoming")] == 3930800510
    assert families["evotic_server_traffic_previous_period_bytes"][(*key, "outgoing")] == 158715701
    assert families["evotic_server_traffic_limit_exceeded"][(*key, "outgoing")] == 1.0
    assert families["evotic_server_progress_ratio"][(*key, "creating the backup")] == 0.53
    assert families["evotic_server_processing"][("3", "サーバー-7")] == 0.0
    assert families["evotic_server_traffic_quota_bytes"][(*key, "outgoing")] == 2**40
    assert (
        families["evotic_server_traffic_quota_bytes"][("3", "サーバー-7", "outgoing")] == 5 * 2**30
    )
    assert ("3", "サーバー-7", "incoming") not in families["evotic_server_traffic_quota_bytes"]
    assert families["evotic_server_running"] == {
        key: 1.0,
        ("2", 'bücher "db" \\ primary\nline'): 0.0,
        ("3", "サーバー-7"): 0.0,
    }


# ----------------------------------------------------------------------------- the fast path
# /metrics is written by render_snapshot (and openmetrics_from_text), not from sample tuples;
# these hold it to the same bytes as prometheus_client's renderers over server_samples.


@pytest.mark.parametrize(
    ("fmt", "golden"), [("text", "servers.prom"), ("openmetrics", "servers.om")]
)
def test_fast_path_matches_golden_file(sample_snapshot: Snapshot, fmt: Format, golden: str) -> None:
    assert render_snapshot(sample_snapshot, fmt).decode() == (GOLDEN / golden).read_text(
        encoding="utf-8"
    )


def _simulated_snapshot(servers: int) -> Snapshot:
    """A simulated fleet with the awkward parts switched on: odd hostnames, task statuses,
    quota rules and a billing period."""
    fleet = Fleet(lambda: 1_700_000_000.0, servers=servers, seed=7)
    listed = list(parse_listing_page(fleet.listing_json()).servers)
    odd = ['a"b', "back\\slash", "new\nline", "サーバー", "", "# HELP evotic_server_status x"]
    for i, hostname in enumerate(odd):
        listed[i * 7] = dataclasses.replace(listed[i * 7], hostname=hostname, node=hostname)
    rng = random.Random(3)
    statuses = {
        server.id: ServerStatus(
            status=rng.choice(["creating the backup", 'say "hi"', "reinstalling"]),
            is_processing=rng.random() < 0.5,
            progress=rng.choice([None, 0, 53, 99.5, 100]),
        )
        for server in listed[::3]
    }
    quotas = Quotas(
        default={"incoming": 2.0**40, "outgoing": 2.0**40},
        rules=(Rule(quota={"outgoing": 5e12}, hostname="db-*"), Rule(quota={}, server_id="105")),
    )
    return Snapshot(servers=tuple(listed), taken_at=1_700_000_000.0, statuses=statuses,
                    quotas=quotas, period=(1_698_796_800.0, 1_701_388_800.0))  # fmt: skip


@pytest.mark.parametrize("fmt", ["text", "openmetrics"])
def test_fast_path_is_byte_identical_to_prometheus_client_on_a_simulated_fleet(
    fmt: Format,
) -> None:
    snapshot = _simulated_snapshot(1500)
    expected = _client_render(snapshot, fmt)
    assert render_snapshot(snapshot, fmt) == expected
    # Families are written a batch of servers at a time; the seams must not show.
    assert render_snapshot(snapshot, fmt, batch=7) == expected


def test_openmetrics_body_is_the_text_body_with_its_headers_swapped() -> None:
    snapshot = _simulated_snapshot(300)
    text = render_snapshot(snapshot, "text")
    assert openmetrics_from_text(text) == _client_render(snapshot, "openmetrics")


def test_exposition_serves_the_same_bytes_in_every_form() -> None:
    snapshot = _simulated_snapshot(200)
    exposition = Exposition(snapshot)

    async def forms() -> tuple[bytes, bytes, bytes]:
        om = await exposition.body("openmetrics")
        packed = await exposition.compressed("openmetrics")
        return om, packed.head, packed.finish(b"# tail\n")

    om, head, tail = asyncio.run(forms())
    assert exposition.text == _client_render(snapshot, "text")
    assert om == _client_render(snapshot, "openmetrics")
    assert gzip.decompress(head + tail) == om + b"# tail\n"
    assert exposition.series == sum(len(s) for s in server_samples(snapshot).values())


def test_a_gzip_ending_is_compressed_again_for_a_new_tail_only() -> None:
    exposition = Exposition(_simulated_snapshot(50))
    packed = asyncio.run(exposition.compressed("text"))
    first_tail, second_tail = b"evotic_up 1.0\n", b"evotic_up 0.0\n"
    ending = packed.finish(first_tail)
    assert packed.finish(first_tail) is ending  # the same tail: nothing compressed again
    changed = packed.finish(second_tail)
    assert gzip.decompress(packed.head + changed) == exposition.text + second_tail
    equal_but_new = bytes(bytearray(first_tail))  # equal bytes, another object
    assert gzip.decompress(packed.head + packed.finish(equal_but_new)) == (
        exposition.text + first_tail
    )


def test_number_formatting_matches_prometheus_client() -> None:
    # The fast path formats numbers itself; every magnitude must come out as Go's form.
    rng = random.Random(11)
    values = [0.0, -0.0, 1.0, 0.5, 1e-7, 5e-324, 999999.9999999999, 1e6, 1000000.5, 1e15,
              9999999999999998.0, 1e16, 1.5e300, -1.0, -1e7, math.inf, -math.inf, math.nan,
              2.0**53, 2.0**40 * 5, 1_699_035_782.0, 3930800510.0]  # fmt: skip
    for exponent in range(-10, 20):
        values += [rng.uniform(0, 10.0**exponent) for _ in range(200)]
        values += [float(rng.randrange(1, 10**17) // 10 ** rng.randrange(0, 17))]
    for value in values:
        assert _go_float(value) == floatToGoString(value), value
    # An int of a million or more (a size in whole bytes) is the float it stands for, not a
    # number a hundred times larger; below that, "7" and "7.0" are the same sample value.
    for number in (10**6, 2**40, 5 * 2**40, 10**15 + 3):
        assert _go_float(number) == floatToGoString(float(number)), number
    assert float(_go_float(7)) == 7
