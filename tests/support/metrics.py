"""Reading Prometheus text scraped from every node of the Ray cluster."""

from __future__ import annotations

import re

import httpx


def scrape_metrics(urls: tuple[str, ...]) -> str:
    """Every node's ``/metrics`` text, concatenated (a replica reports on its own node only)."""
    texts = []
    for url in urls:
        response = httpx.get(url, timeout=10)
        response.raise_for_status()
        texts.append(response.text)
    return "\n".join(texts)


def metric_samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of a metric whose labels include ``labels``, with all its labels."""
    samples = []
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            samples.append((found, float(match.group(2))))
    return samples


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """Sum of a metric's samples whose labels include ``labels`` (None: no sample).

    Samples from different nodes come from different processes, so equal labels on two
    nodes are two replicas' counts and add up.
    """
    samples = metric_samples(text, name, **labels)
    return sum(value for _, value in samples) if samples else None
