"""Parse what ``/metrics`` serves into something tests can assert on."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def scrape(url: str, **headers: str) -> list[Sample]:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    response.raise_for_status()
    return parse(response.text)


def values(samples: list[Sample], name: str, key: str = "server_id") -> dict[str, float]:
    """``{label value: sample value}`` of one metric, keyed by one label."""
    return {s.labels.get(key, ""): s.value for s in samples if s.name == name}


def one(samples: list[Sample], name: str) -> float:
    found = [s.value for s in samples if s.name == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]
