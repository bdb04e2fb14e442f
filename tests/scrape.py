"""Read a real /metrics page into numbers the tests can compare."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "pid")
            key = (sample.name, labels)
            # Multiprocess "liveall"-style series per pid are summed here.
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def scrape(base_url: str, **client: Any) -> Samples:
    response = httpx.get(f"{base_url}/metrics", timeout=5, **client)
    response.raise_for_status()
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def call_setups(base_urls: list[str], candidate_type: str) -> tuple[float, float]:
    """(``connected`` call-setup reports of that candidate type, setup-time
    observations), summed over the instances."""
    connected = observed = 0.0
    for base_url in base_urls:
        for (name, labels), sample in scrape(base_url).items():
            if name == "sbd_call_setup_seconds_count":
                observed += sample
            elif name == "sbd_call_setups_total" and labels >= {
                ("outcome", "connected"),
                ("candidate_type", candidate_type),
            }:
                connected += sample
    return connected, observed
