"""The router's metrics, recorded in the ingress process (Ray metrics, ``ray_`` in Prometheus).

Routing precision is ``prism_router_confirmed_cached_tokens`` over
``prism_router_predicted_cached_tokens``: of the prompt tokens the router expected a replica
to hold, the share the replica's engine really found cached.
"""

from __future__ import annotations

from functools import cache

from ray.serve.metrics import Counter, Histogram

_FAST_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25]


class RouterMetrics:
    """Counters and histograms of one process's routers."""

    def __init__(self) -> None:
        self.decisions = Counter(
            "prism_router_decisions",
            "Routing decisions by policy and outcome (hit, miss, fallback, load).",
            ("model", "policy", "outcome"),  # pyright: ignore[reportArgumentType]: Ray types tag_keys as a 1-tuple
        )
        self.predicted_tokens = Counter(
            "prism_router_predicted_cached_tokens",
            "Prompt tokens the router expected the chosen replica to hold cached.",
            ("model",),
        )
        self.confirmed_tokens = Counter(
            "prism_router_confirmed_cached_tokens",
            "Predicted prompt tokens the chosen replica really had cached.",
            ("model",),
        )
        self.actual_tokens = Counter(
            "prism_router_actual_cached_tokens",
            "Cached prompt tokens the replica reported, for requests routed with a prediction.",
            ("model",),
        )
        self.decision_seconds = Histogram(
            "prism_router_decision_seconds",
            "Time the router spent choosing replicas for a request (index query included).",
            _FAST_BUCKETS,
            ("model", "policy"),  # pyright: ignore[reportArgumentType]: Ray types tag_keys as a 1-tuple
        )
        self.redis_seconds = Histogram(
            "prism_router_redis_latency_seconds",
            "Round-trip time of the prefix index queries.",
            _FAST_BUCKETS,
            ("model",),
        )
        self.redis_errors = Counter(
            "prism_router_redis_errors",
            "Prefix index queries or writes that failed or timed out.",
            ("model",),
        )

    def record_cached(self, model_id: str, predicted: int, actual: int) -> None:
        """Compare a prediction with the cached tokens the replica reported."""
        tags = {"model": model_id}
        for counter, value in (
            (self.predicted_tokens, predicted),
            (self.confirmed_tokens, min(predicted, actual)),
            (self.actual_tokens, actual),
        ):
            if value > 0:  # Ray counters refuse zero increments
                counter.inc(value, tags)


@cache
def router_metrics() -> RouterMetrics:
    """The process's one set of router metrics (Ray allows each name once per process)."""
    return RouterMetrics()
