"""The engine's load and cache counters, as the replica reports them to metrics and autoscaling."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of the engine's load and cache counters (prefix counts are in tokens)."""

    num_running: int
    num_waiting: int
    num_kv_blocks: int
    num_free_kv_blocks: int
    kv_cache_usage: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_preemptions: int
    num_pending_prefill_tokens: int
    """Uncached prompt tokens not yet prefilled (waiting requests and unfinished chunks)."""
