"""The serving benchmark's statistics and report: the load run and the lone requests."""

from __future__ import annotations

import random

import numpy as np
import pytest

from prism.bench.machine import Machine
from prism.bench.serve.load import LoadRun, RequestRecord
from prism.bench.serve.lone import LoneRequest
from prism.bench.serve.prompts import LONE_PROMPT_WORDS, lone_prompts
from prism.bench.serve.report import format_serve_report, serve_to_json
from prism.bench.serve.results import LoneSummary, ServeBenchResult, summarize, summarize_lone
from prism.bench.serve.workload import ServeWorkload
from prism.bench.stats import Percentiles, Spread, percentile


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


def lone(http: float, engine: float | None, replica: str = "a", error: str | None = None):
    return LoneRequest(http, engine, prompt_tokens=800, replica=replica, error=error)


def test_lone_summary_compares_the_first_with_the_rest_and_spreads_the_overhead() -> None:
    requests = [
        lone(0.50, 0.40),
        lone(0.42, 0.40, "b"),
        lone(9.00, None, error="Error code: 503"),
        lone(0.41, 0.38),
        lone(0.44, 0.43, "b"),
    ]

    summary = summarize_lone(requests)

    assert summary.cold_start_penalty_seconds == pytest.approx(0.50 - 0.42)
    overhead = summary.overhead_seconds
    assert [overhead.median, overhead.minimum, overhead.maximum] == pytest.approx(
        [0.025, 0.01, 0.1]
    )
    assert [request.overhead_seconds for request in requests] == pytest.approx(
        [0.10, 0.02, None, 0.03, 0.01]
    )


def test_lone_summary_has_no_penalty_without_a_successful_first_and_another() -> None:
    assert summarize_lone([lone(0.5, 0.4)]).cold_start_penalty_seconds is None
    failed_first = summarize_lone([lone(0.1, None, error="timeout"), lone(0.5, 0.4)])
    assert failed_first.cold_start_penalty_seconds is None
    assert summarize_lone([]).overhead_seconds == Spread(None, None, None)


def serve_result(lone_summary: LoneSummary | None, protocol: str = "http") -> ServeBenchResult:
    record = RequestRecord(content_times=[0.5, 0.6], finished=0.6, prompt_tokens=40, replica="a")
    return ServeBenchResult(
        date="2025-01-01T00:00:00+00:00",
        machine=Machine("cpu", 2, 2, 1, "cpu", "cpu", "2", "5", "3.11"),
        protocol=protocol,
        target="http://127.0.0.1:8000/v1",
        model_id="m",
        workload=ServeWorkload(1, 1, 2, "robots", lone_requests=2),
        summary=summarize(LoadRun([record], seconds=1.0)),
        lone=lone_summary,
    )


def test_report_lists_each_lone_request_then_the_penalty_and_overhead() -> None:
    result = serve_result(summarize_lone([lone(0.5, 0.4, "r1"), lone(0.42, 0.4, "r2")]))

    lines = format_serve_report(result).splitlines()
    first = next(line for line in lines if line.startswith("1  r1"))
    record = serve_to_json(result)["lone_requests"]

    assert first.split()[2:] == ["800", "500.0", "400.0", "100.0"]
    assert any(line.startswith("first vs rest") and line.endswith("+80.0") for line in lines)
    assert any(line.startswith("serving overhead ms p50") and "60.0" in line for line in lines)
    assert any(line.endswith("20.0-100.0") for line in lines)
    assert record["requests"][1]["overhead_seconds"] == pytest.approx(0.02)
    assert record["requests"][1]["replica"] == "r2"
    assert record["cold_start_penalty_seconds"] == pytest.approx(0.08)
    assert record["overhead_seconds"]["maximum"] == pytest.approx(0.1)


def test_report_says_why_lone_requests_were_not_measured_over_grpc() -> None:
    result = serve_result(None, protocol="grpc")

    assert "lone requests: not measured" in format_serve_report(result)
    assert serve_to_json(result)["lone_requests"] is None


def test_lone_prompts_are_long_start_apart_and_follow_their_seed() -> None:
    prompts = lone_prompts(5, seed=3)
    texts = [messages[0]["content"] for messages in prompts]

    assert all(len(text.split()) == LONE_PROMPT_WORDS for text in texts)
    assert len({text.split()[0] for text in texts}) == 5
    assert lone_prompts(5, seed=3) == prompts
    assert lone_prompts(5, seed=4) != prompts
