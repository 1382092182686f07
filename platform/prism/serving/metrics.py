"""Prism's metrics, exported through Ray (Ray dashboard, Prometheus with a ``ray_`` prefix).

Engine gauges are refreshed from the engine's stats; request latencies and token counts are
recorded as each request finishes, as the replica saw them (queueing included). The ingress
counts requests, errors and each model's live replicas.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

from prism.engine_stats import EngineStats

_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
_TOKEN_GAP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
_MODEL = ("model",)


class EngineMetrics:
    """The engine-side metrics of one replica."""

    def __init__(self, model_id: str) -> None:
        self._tags = {"model": model_id}
        self.running = Gauge(
            "prism_num_requests_running", "Requests in the engine's running batch.", _MODEL
        )
        self.waiting = Gauge("prism_num_requests_waiting", "Requests queued in the engine.", _MODEL)
        self.kv_usage = Gauge(
            "prism_kv_cache_usage_ratio", "Fraction of KV cache blocks held by requests.", _MODEL
        )
        self.pending_prefill = Gauge(
            "prism_pending_prefill_tokens",
            "Uncached prompt tokens waiting to be prefilled.",
            _MODEL,
        )
        self.prefix_queries = Counter(
            "prism_prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", _MODEL
        )
        self.prefix_hits = Counter(
            "prism_prefix_cache_hits", "Prompt tokens found in the prefix cache.", _MODEL
        )
        self.preemptions = Counter(
            "prism_preemptions", "Requests preempted for lack of KV blocks.", _MODEL
        )
        self.prompt_tokens = Counter("prism_prompt_tokens", "Prompt tokens processed.", _MODEL)
        self.generation_tokens = Counter(
            "prism_generation_tokens", "Output tokens generated.", _MODEL
        )
        self.ttft = Histogram(
            "prism_time_to_first_token_seconds",
            "Time from a request's arrival at the replica to its first token.",
            _LATENCY_BUCKETS,
            _MODEL,
        )
        self.inter_token = Histogram(
            "prism_inter_token_latency_seconds",
            "Time between consecutive output tokens of a request.",
            _TOKEN_GAP_BUCKETS,
            _MODEL,
        )
        self.e2e = Histogram(
            "prism_e2e_request_latency_seconds",
            "Time from a request's arrival at the replica to its last token.",
            _LATENCY_BUCKETS,
            _MODEL,
        )
        for metric in (
            self.running,
            self.waiting,
            self.kv_usage,
            self.pending_prefill,
            self.prefix_queries,
            self.prefix_hits,
            self.preemptions,
            self.prompt_tokens,
            self.generation_tokens,
            self.ttft,
            self.inter_token,
            self.e2e,
        ):
            metric.set_default_tags(dict(self._tags))  # Serve adds its tags to the dict
        self._last = EngineStats(0, 0, 0, 0, 0.0, 0, 0, 0, 0)

    def observe_stats(self, stats: EngineStats) -> None:
        """Refresh gauges and add the growth of cumulative counters since the last call."""
        self.running.set(stats.num_running)
        self.waiting.set(stats.num_waiting)
        self.kv_usage.set(stats.kv_cache_usage)
        self.pending_prefill.set(stats.num_pending_prefill_tokens)
        for counter, now, before in (
            (self.prefix_queries, stats.prefix_cache_queries, self._last.prefix_cache_queries),
            (self.prefix_hits, stats.prefix_cache_hits, self._last.prefix_cache_hits),
            (self.preemptions, stats.num_preemptions, self._last.num_preemptions),
        ):
            if now > before:
                counter.inc(now - before)
        self._last = stats

    def observe_request(
        self,
        prompt_tokens: int,
        output_tokens: int,
        ttft: float | None,
        token_gaps: list[float],
        e2e: float,
    ) -> None:
        """Record one finished (or aborted) request."""
        if prompt_tokens:  # Ray's counters refuse an increment of 0
            self.prompt_tokens.inc(prompt_tokens)
        if output_tokens:
            self.generation_tokens.inc(output_tokens)
        if ttft is not None:
            self.ttft.observe(ttft)
        for gap in token_gaps:
            self.inter_token.observe(gap)
        self.e2e.observe(e2e)


class IngressMetrics:
    """Requests and errors as the API front sees them."""

    def __init__(self) -> None:
        self.requests = Counter(
            "prism_api_requests",
            "API requests by endpoint and HTTP status.",
            ("endpoint", "status"),  # pyright: ignore[reportArgumentType]: Ray types tag_keys as a 1-tuple
        )
        self.errors = Counter(
            "prism_api_errors",
            "API errors by endpoint and error type.",
            ("endpoint", "type"),  # pyright: ignore[reportArgumentType]: Ray types tag_keys as a 1-tuple
        )

    def observe(self, endpoint: str, status: int, error_type: str | None = None) -> None:
        self.requests.inc(tags={"endpoint": endpoint, "status": str(status)})
        if error_type is not None:
            self.errors.inc(tags={"endpoint": endpoint, "type": error_type})


class ModelHealthMetrics:
    """Each model's live replicas, as an ingress replica last counted them."""

    def __init__(self) -> None:
        self.live_replicas = Gauge(
            "prism_model_live_replicas",
            "Running replicas of the model, as Serve's controller counts them (0: unavailable).",
            _MODEL,
        )

    def observe(self, model_id: str, live_replicas: int) -> None:
        self.live_replicas.set(live_replicas, tags={"model": model_id})
