"""The serving benchmark's statistics: percentiles and the summary of a load run."""

from __future__ import annotations

import random

import numpy as np
import pytest

from prism.bench.serve.load import LoadRun, RequestRecord
from prism.bench.serve.results import summarize
from prism.bench.stats import Percentiles, percentile


def test_percentile_interpolates_between_the_nearest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]

    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile(values, 100) == 4.0


def test_percentile_of_one_value_is_that_value_and_of_none_is_none() -> None:
    assert percentile([0.25], 99) == 0.25
    assert percentile([], 50) is None
    assert Percentiles.of([]) == Percentiles(None, None, None)


@pytest.mark.parametrize("q", [1, 25, 50, 90, 99, 99.9])
def test_percentile_matches_numpy_on_random_samples(q: float) -> None:
    rng = random.Random(7)
    values = [rng.expovariate(3.0) for _ in range(257)]

    assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_refuses_a_rank_outside_0_to_100() -> None:
    with pytest.raises(ValueError, match="100"):
        percentile([1.0], 101)


def test_summary_counts_only_successful_requests_in_latencies_and_tokens() -> None:
    ok = RequestRecord(
        content_times=[0.5, 0.6, 0.8],
        finished=0.9,
        prompt_tokens=40,
        completion_tokens=3,
        cached_tokens=30,
        replica="a",
    )
    other = RequestRecord(
        content_times=[0.25, 0.35],
        finished=0.4,
        prompt_tokens=40,
        completion_tokens=2,
        cached_tokens=10,
        replica="b",
    )
    failed = RequestRecord(finished=0.1, error="Error code: 503 - overloaded")

    summary = summarize(LoadRun([ok, other, failed, ok], seconds=2.0))

    assert (summary.completed, summary.errors) == (3, 1)
    assert summary.requests_per_second == 1.5
    assert summary.output_tokens_per_second == 4.0
    assert summary.cached_prompt_fraction == pytest.approx(70 / 120)
    assert summary.ttft_seconds.p50 == 0.5
    assert summary.inter_token_seconds.p50 == pytest.approx(0.1)
    assert summary.end_to_end_seconds.p99 == pytest.approx(0.9)
    assert summary.replicas == {"a": 2, "b": 1}
    assert summary.error_messages == {"Error code: 503 - overloaded": 1}
