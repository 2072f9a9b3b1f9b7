"""Start a real Prometheus (the Debian package's binary) and query it over its HTTP API.

Tests use it to run the dashboards' queries and the alerting rules against what the exporter
really serves, without a Grafana server.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from .processes import free_port, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

Json = dict[str, Any]


class QueryError(Exception):
    """Prometheus refused a query; the message is its error."""


@dataclass
class Prometheus:
    """A running Prometheus: ``url`` is its HTTP root."""

    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _get(self, path: str, params: dict[str, Any] | list[tuple[str, Any]]) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[Json]:
        """The result of an instant query now: one entry per series."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] not in ("vector", "matrix"):
            # A scalar or string result: one value and no labels.
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, seconds: float, step: float) -> list[Json]:
        """The result of a range query over the last ``seconds``."""
        end = time.time()
        params = {"query": expr, "start": end - seconds, "end": end, "step": step}
        return list(self._get("/api/v1/query_range", params)["result"])

    def series_labels(self, match: str) -> list[dict[str, str]]:
        """The label sets of the series ``match`` selects (what Grafana's label_values uses)."""
        return list(self._get("/api/v1/series", [("match[]", match)]))

    def rules(self) -> list[Json]:
        """Every loaded rule with its health and last error."""
        groups = self._get("/api/v1/rules", {})["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def write_config(
    path: Path,
    targets: Sequence[str],
    rule_files: Sequence[Path],
    job: str,
    interval: str,
    scrape_configs: Sequence[dict[str, Any]] | None = None,
) -> None:
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": list(scrape_configs)
        if scrape_configs is not None
        else [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


@contextlib.contextmanager
def prometheus(
    tmp_path: Path,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    *,
    job: str = "evotic-exporter",
    interval: str = "1s",
    scrape_configs: Sequence[dict[str, Any]] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (host:port) as ``job`` and evaluating ``rule_files``;
    ``scrape_configs``, when given, replaces that one job.

    Scrapes and rule evaluations run every ``interval``, so that rates and alerts have data
    within seconds. The storage lives in ``tmp_path`` and goes with it.
    """
    port = free_port()
    config = tmp_path / "prometheus.yml"
    write_config(config, targets, rule_files, job, interval, scrape_configs)
    log_path = tmp_path / f"prometheus-{port}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    server = Prometheus(popen, f"http://127.0.0.1:{port}", log_path)
    try:

        def ready() -> bool:
            if popen.poll() is not None:
                raise AssertionError(f"prometheus exited with {popen.returncode}:\n"
                                     f"{server.output()}")  # fmt: skip
            return httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200

        wait_until(ready, timeout=30, interval=0.1, what="prometheus to be ready")
        yield server
    finally:
        server.stop()
