"""Ranking replicas for one request: uncached prompt tokens plus load, lowest cost first."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from prism.config import RouterSettings


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """What the router knows of one candidate replica for one request."""

    replica_id: str
    cached_tokens: int
    """Leading prompt tokens the replica holds (from the index; 0 when unknown)."""
    in_flight: int
    """Requests running or waiting on it."""
    kv_usage: float = 0.0
    """Fraction of its KV cache held by requests."""


@dataclass(frozen=True, slots=True)
class CostModel:
    """The knobs of the cost, as :class:`prism.config.RouterSettings` declares them."""

    load_cost_tokens: float
    imbalance_threshold: int
    kv_usage_threshold: float

    @classmethod
    def from_settings(cls, settings: RouterSettings) -> CostModel:
        return cls(
            settings.load_cost_tokens, settings.imbalance_threshold, settings.kv_usage_threshold
        )

    def cost(self, prompt_tokens: int, replica: ReplicaLoad) -> float:
        """Prompt tokens the replica would prefill, plus its load in token equivalents."""
        uncached = max(prompt_tokens - replica.cached_tokens, 0)
        return uncached + self.load_cost_tokens * replica.in_flight

    def rank(
        self, prompt_tokens: int, replicas: Sequence[ReplicaLoad], rng: random.Random
    ) -> list[ReplicaLoad]:
        """Replicas best first; equal costs in random order.

        Replicas over the imbalance threshold (many more requests than the least loaded)
        or over the KV usage threshold come after all others, so a hot prefix spreads out
        instead of piling onto one replica.
        """
        if not replicas:
            return []
        least_loaded = min(replica.in_flight for replica in replicas)

        def order(replica: ReplicaLoad) -> tuple[bool, float, float]:
            crowded = (
                replica.in_flight - least_loaded >= self.imbalance_threshold
                or replica.kv_usage > self.kv_usage_threshold
            )
            return crowded, self.cost(prompt_tokens, replica), rng.random()

        return sorted(replicas, key=order)
