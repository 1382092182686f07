"""Percentiles and spreads of latency samples, the way the benchmarks report them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, None when there are none.

    numpy's linear interpolation between the two nearest ranks: the p50 of an even count is
    the mean of the middle two, p0 and p100 are the minimum and maximum.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile lies in [0, 100], got {q}")
    if not values:
        return None
    return float(np.percentile(values, q, method="linear"))


@dataclass(frozen=True, slots=True)
class Percentiles:
    """The median, p90 and p99 of one latency, in seconds (None without samples)."""

    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        return cls(percentile(values, 50), percentile(values, 90), percentile(values, 99))


@dataclass(frozen=True, slots=True)
class Spread:
    """The median, minimum and maximum of a few samples (None without samples)."""

    median: float | None
    minimum: float | None
    maximum: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(percentile(values, 50), percentile(values, 0), percentile(values, 100))
