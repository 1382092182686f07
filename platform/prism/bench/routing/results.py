"""What the routing benchmark measures, per policy, as plain records (ratios are properties)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from prism.bench.machine import Machine
from prism.bench.routing.load import LoadShape, RoutedRecord, RoutedRun
from prism.bench.routing.workloads import RoutingWorkload
from prism.bench.stats import Percentiles

BASELINE_POLICY = "pow2"


@dataclass(frozen=True, slots=True)
class RoutingDeployment:
    """The model deployment every policy runs on."""

    replicas: int
    kv_cache_bytes: int
    num_cpus: float
    """CPUs Ray reserves for each replica."""
    ingress_replicas: int


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True, slots=True)
class PolicySummary:
    """One policy's latencies, throughput, prefix-cache use, routing precision and spread.

    Token counts and latencies come from the requests that succeeded.
    """

    policy: str
    completed: int
    errors: int
    seconds: float
    prompt_tokens: int
    cached_tokens: int
    ideal_cached_tokens: int
    output_tokens: int
    ttft_mean_seconds: float | None
    ttft_seconds: Percentiles
    end_to_end_seconds: Percentiles
    predictions: int
    """Requests for which the router predicted a cached-token count."""
    predicted_tokens: int
    predicted_tokens_found: int
    """Over those requests, the sum of min(actual, predicted) cached tokens."""
    replicas: dict[str, int]
    error_messages: dict[str, int]

    @property
    def hit_ratio(self) -> float | None:
        """Cached prompt tokens / prompt tokens."""
        return _ratio(self.cached_tokens, self.prompt_tokens)

    @property
    def ideal_hit_ratio(self) -> float | None:
        """What a cache holding every earlier prompt would have served / prompt tokens."""
        return _ratio(self.ideal_cached_tokens, self.prompt_tokens)

    @property
    def hit_of_ideal(self) -> float | None:
        return _ratio(self.cached_tokens, self.ideal_cached_tokens)

    @property
    def output_tokens_per_second(self) -> float | None:
        return _ratio(self.output_tokens, self.seconds)

    @property
    def routing_precision(self) -> float | None:
        """The share of predicted cached tokens that were really cached; None without any."""
        return _ratio(self.predicted_tokens_found, self.predicted_tokens)


def replica_counts(records: Iterable[RoutedRecord], known: Iterable[str] = ()) -> dict[str, int]:
    """Requests per replica, busiest first; ``known`` replicas that served none count 0."""
    counts = Counter(dict.fromkeys(known, 0))
    counts.update(record.result.replica or "(not named)" for record in records)
    return dict(counts.most_common())


def summarize_policy(
    policy: str, run: RoutedRun, known_replicas: Iterable[str] = ()
) -> PolicySummary:
    """Totals, percentiles and ratios over ``run``; ``known_replicas`` (say, those that
    answered the warm-up) are listed even when they served no request."""
    done = [record for record in run.records if record.result.error is None]
    failed = [record.result.error for record in run.records if record.result.error is not None]
    predicted = [record for record in done if record.predicted_cached_tokens is not None]
    ttfts = [record.result.ttft for record in done if record.result.ttft is not None]
    return PolicySummary(
        policy=policy,
        completed=len(done),
        errors=len(failed),
        seconds=run.seconds,
        prompt_tokens=sum(record.result.prompt_tokens for record in done),
        cached_tokens=sum(record.result.cached_tokens for record in done),
        ideal_cached_tokens=sum(record.request.ideal_cached_tokens for record in done),
        output_tokens=sum(record.result.completion_tokens for record in done),
        ttft_mean_seconds=statistics.fmean(ttfts) if ttfts else None,
        ttft_seconds=Percentiles.of(ttfts),
        end_to_end_seconds=Percentiles.of([record.result.finished for record in done]),
        predictions=len(predicted),
        predicted_tokens=sum(record.predicted_cached_tokens or 0 for record in predicted),
        predicted_tokens_found=sum(
            min(record.result.cached_tokens, record.predicted_cached_tokens or 0)
            for record in predicted
        ),
        replicas=replica_counts(done, known_replicas),
        error_messages=dict(Counter(failed).most_common()),
    )


@dataclass(frozen=True, slots=True)
class BaselineRatios:
    """How a policy compares with the baseline; above 1 means the policy did better."""

    policy: str
    ttft_mean: float | None
    """Baseline mean TTFT / the policy's."""
    ttft_p90: float | None
    """Baseline p90 TTFT / the policy's."""
    output_tokens_per_second: float | None
    """The policy's output tokens/s / the baseline's."""


def _quotient(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or denominator is None else _ratio(numerator, denominator)


def ratios_to_baseline(baseline: PolicySummary, summary: PolicySummary) -> BaselineRatios:
    """TTFT and throughput ratios of ``summary`` against ``baseline``."""
    return BaselineRatios(
        policy=summary.policy,
        ttft_mean=_quotient(baseline.ttft_mean_seconds, summary.ttft_mean_seconds),
        ttft_p90=_quotient(baseline.ttft_seconds.p90, summary.ttft_seconds.p90),
        output_tokens_per_second=_quotient(
            summary.output_tokens_per_second, baseline.output_tokens_per_second
        ),
    )


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One policy's summary and every request it served."""

    summary: PolicySummary
    records: list[RoutedRecord]


@dataclass(frozen=True, slots=True)
class RoutingBenchResult:
    """One routing benchmark: where it ran, on what deployment, and each policy's result."""

    date: str
    machine: Machine
    model_id: str
    deployment: RoutingDeployment
    workload: RoutingWorkload
    load: LoadShape
    policies: list[PolicyResult]
    decision_ms: dict[str, float] | None = None
    """The router's own decision time on this machine's Redis (``routing.decision``)."""

    def baseline_ratios(self) -> list[BaselineRatios]:
        """Every other policy against :data:`BASELINE_POLICY`; empty when it did not run."""
        summaries = [result.summary for result in self.policies]
        baseline = next((s for s in summaries if s.policy == BASELINE_POLICY), None)
        if baseline is None:
            return []
        return [ratios_to_baseline(baseline, s) for s in summaries if s is not baseline]
