"""Reading Prometheus text scraped from Ray's metrics endpoint."""

from __future__ import annotations

import re


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
    """Sum of a metric's samples whose labels include ``labels`` (None: no sample)."""
    samples = metric_samples(text, name, **labels)
    return sum(value for _, value in samples) if samples else None
