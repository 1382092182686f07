"""What the serving benchmark measures, as plain records (derived rates are properties)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from prism.bench.machine import Machine
from prism.bench.serve.load import LoadRun
from prism.bench.serve.lone import LoneRequest
from prism.bench.serve.workload import ServeWorkload
from prism.bench.stats import Percentiles, Spread, percentile


@dataclass(frozen=True, slots=True)
class ServeSummary:
    """The load's latencies, throughput, prefix-cache use and replicas, from the client side.

    Token counts come from the usage chunks of the requests that succeeded.
    """

    completed: int
    errors: int
    seconds: float
    prompt_tokens: int
    cached_prompt_tokens: int
    output_tokens: int
    ttft_seconds: Percentiles
    inter_token_seconds: Percentiles
    end_to_end_seconds: Percentiles
    replicas: dict[str, int]
    error_messages: dict[str, int]

    @property
    def requests_per_second(self) -> float:
        return self.completed / self.seconds

    @property
    def output_tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds

    @property
    def cached_prompt_fraction(self) -> float | None:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else None


def summarize(run: LoadRun) -> ServeSummary:
    """Percentiles, totals and counts over the requests of ``run``."""
    done = [record for record in run.records if record.error is None]
    failed = [record.error for record in run.records if record.error is not None]
    gaps = [gap for record in done for gap in record.inter_token_gaps]
    return ServeSummary(
        completed=len(done),
        errors=len(failed),
        seconds=run.seconds,
        prompt_tokens=sum(record.prompt_tokens for record in done),
        cached_prompt_tokens=sum(record.cached_tokens for record in done),
        output_tokens=sum(record.completion_tokens for record in done),
        ttft_seconds=Percentiles.of([record.ttft for record in done if record.ttft is not None]),
        inter_token_seconds=Percentiles.of(gaps),
        end_to_end_seconds=Percentiles.of([record.finished for record in done]),
        replicas=dict(Counter(record.replica or "(not named)" for record in done).most_common()),
        error_messages=dict(Counter(failed).most_common()),
    )


@dataclass(frozen=True, slots=True)
class LoneSummary:
    """The lone requests, in the order sent, and what serving adds to the engine's TTFT.

    Only requests that succeeded count in the two measures.
    """

    requests: list[LoneRequest]
    cold_start_penalty_seconds: float | None
    """Seconds the first request's HTTP TTFT exceeds the median of the others' (None unless
    the first and at least one other succeeded)."""
    overhead_seconds: Spread
    """Seconds of HTTP TTFT beyond the engine's TTFT, over the requests that reported both."""


def summarize_lone(requests: list[LoneRequest]) -> LoneSummary:
    """The cold-start penalty and the serving overhead of ``requests``."""
    penalty = None
    if requests and requests[0].error is None:
        rest = [request.http_ttft_seconds for request in requests[1:] if request.error is None]
        median = percentile(rest, 50)
        penalty = None if median is None else requests[0].http_ttft_seconds - median
    overheads = [request.overhead_seconds for request in requests]
    return LoneSummary(
        requests=requests,
        cold_start_penalty_seconds=penalty,
        overhead_seconds=Spread.of([seconds for seconds in overheads if seconds is not None]),
    )


@dataclass(frozen=True, slots=True)
class ServeBenchResult:
    """One serving benchmark: where it ran, against what, over which protocol, and what it
    measured."""

    date: str
    machine: Machine
    protocol: str
    """``http`` (the OpenAI API) or ``grpc``."""
    target: str
    """The OpenAI API base URL, or the gRPC API's ``host:port``."""
    model_id: str
    workload: ServeWorkload
    summary: ServeSummary
    lone: LoneSummary | None
    """None when the workload has no lone requests or they cannot run (over gRPC)."""
