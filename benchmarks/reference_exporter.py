"""The peer a user would otherwise write: prometheus_client with long-lived labelled Gauges.

It polls the same listing, with the standard library only, and ``.set()``s one labelled
child per series on the global registry; ``start_http_server`` renders the whole registry
on every scrape (and gzips it, when asked, on every scrape). It exports the same families,
names and labels as the exporter, so both answers have the same series. It starts serving
only after its first poll, so an open port means "ready".

Usage: python benchmarks/reference_exporter.py --api-url URL --token T --port P [--interval S]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from datetime import datetime
from typing import Any

from prometheus_client import Gauge, start_http_server

SERVER = ["server_id", "hostname"]
FLOW = ["server_id", "hostname", "direction"]

INFO = Gauge("evotic_server_info", "Server identity.", [*SERVER, "uuid", "node", "os"])
STATUS = Gauge("evotic_server_status", "Current status.", [*SERVER, "status"])
RUNNING = Gauge("evotic_server_running", "1 when started.", SERVER)
CREATED = Gauge("evotic_server_created_timestamp_seconds", "Creation time.", SERVER)
CORES = Gauge("evotic_server_cpu_cores", "Booked cores.", SERVER)
MEMORY = Gauge("evotic_server_memory_bytes", "Booked memory.", SERVER)
DISK = Gauge("evotic_server_disk_bytes", "Booked disk.", SERVER)
CPU_USED = Gauge("evotic_server_cpu_usage_ratio", "CPU usage.", SERVER)
MEMORY_USED = Gauge("evotic_server_memory_used_bytes", "Memory used.", SERVER)
DISK_USED = Gauge("evotic_server_disk_used_bytes", "Disk used.", SERVER)
TRAFFIC = Gauge("evotic_server_traffic_bytes_total", "Traffic this period.", FLOW)
PREVIOUS = Gauge("evotic_server_traffic_previous_period_bytes", "Traffic last period.", FLOW)
EXCEEDED = Gauge("evotic_server_traffic_limit_exceeded", "Limit exceeded.", FLOW)
IP = Gauge("evotic_server_ip_address_info", "IP addresses.", ["server_id", "hostname", "ip",
           "primary", "family"])  # fmt: skip


def get_json(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def listing(api_url: str, token: str) -> list[dict[str, Any]]:
    """Every server, following ``links.next`` when the API paginates."""
    document = get_json(f"{api_url}/servers", token)
    if isinstance(document, list):
        return document
    servers = list(document["data"])
    while document.get("links", {}).get("next"):
        document = get_json(document["links"]["next"], token)
        servers += document["data"]
    return servers


def poll(api_url: str, token: str) -> None:
    for server in listing(api_url, token):
        key = (str(server["id"]), server["hostname"])
        INFO.labels(*key, server.get("uuid") or "", server.get("node") or "",
                    server.get("os") or "").set(1)  # fmt: skip
        STATUS.labels(*key, server.get("status") or "unknown").set(1)
        RUNNING.labels(*key).set(1 if server.get("status") == "started" else 0)
        if server.get("created_at"):
            created = datetime.fromisoformat(server["created_at"].replace("Z", "+00:00"))
            CREATED.labels(*key).set(created.timestamp())
        spec = server.get("specifications") or {}
        for gauge, field, unit in ((CORES, "cpu", 1), (MEMORY, "ram", 2**20),
                                   (DISK, "disk", 2**30)):  # fmt: skip
            if spec.get(field) is not None:
                gauge.labels(*key).set(spec[field] * unit)
        usage = server.get("usage")
        if usage:
            for gauge, field, unit in ((CPU_USED, "cpu", 0.01), (MEMORY_USED, "ram", 2**20),
                                       (DISK_USED, "disk", 2**30)):  # fmt: skip
                if usage.get(field) is not None:
                    gauge.labels(*key).set(usage[field] * unit)
            for direction, flow in (usage.get("traffic") or {}).items():
                if not flow:
                    continue
                if flow.get("value") is not None:
                    TRAFFIC.labels(*key, direction).set(flow["value"])
                if flow.get("prev") is not None:
                    PREVIOUS.labels(*key, direction).set(flow["prev"])
                if flow.get("is_exceeded") is not None:
                    EXCEEDED.labels(*key, direction).set(1 if flow["is_exceeded"] else 0)
        for address in server.get("ip_addresses") or ():
            family = "ipv6" if ":" in address["ip"] else "ipv4"
            primary = "true" if address.get("is_primary") else "false"
            IP.labels(*key, address["ip"], primary, family).set(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=3600.0)
    args = parser.parse_args()
    poll(args.api_url, args.token)
    start_http_server(args.port, addr="127.0.0.1")

    def loop() -> None:
        while True:
            time.sleep(args.interval)
            poll(args.api_url, args.token)

    threading.Thread(target=loop, daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
