"""Prism's Serve autoscaling policy: replica counts from continuous-batching load.

Each signal is compared with its limit as a ratio (1.0: at the limit). Any ratio above 1
asks for more replicas; the linear ones (ongoing and waiting requests, prefill backlog,
KV usage) say how many. Fewer replicas are asked for only when every signal would stay
under ``scale_in_ratio`` of its limit with them: the band between that and 1 holds the
count steady, so the fleet does not flap. Serve then applies the bounds and the upscale and
downscale delays (the sustained quiet period) before acting.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from prism.autoscaling.signals import (
    KV_USAGE,
    OUTPUT_TOKENS_PER_S,
    PENDING_PREFILL_TOKENS,
    RUNNING,
    TTFT_P90_S,
    WAITING,
)
from prism.config import AutoscalingSettings

logger = logging.getLogger("ray.serve")

MAX_GROWTH_FACTOR = 2.0
"""One decision at most doubles the running replicas."""


@dataclass(frozen=True, slots=True)
class Objectives:
    """The limits a replica should stay under: the policy's part of
    :class:`prism.config.AutoscalingSettings`, which declares their defaults."""

    target_ongoing_requests: float
    max_waiting_per_replica: float
    max_pending_prefill_tokens: float
    ttft_p90_objective_s: float
    kv_usage_high: float
    scale_in_ratio: float


@dataclass(frozen=True, slots=True)
class FleetLoad:
    """A model's load over its reporting replicas, as Serve averaged it over the window."""

    replicas: int
    running: float
    waiting: float
    """Waiting in the engines plus queued in Serve's handles."""
    pending_prefill_tokens: float
    kv_usage: float
    """Mean over the replicas."""
    ttft_p90_s: float
    """The worst replica's."""
    output_tokens_per_s: float

    @classmethod
    def from_metrics(
        cls, metrics: dict[str, dict[Any, float]], replicas: list[Any], handle_queued: float
    ) -> FleetLoad | None:
        """Sum the replicas' readings; None when no running replica has reported yet."""
        reporting = [r for r in replicas if r in metrics.get(RUNNING, {})]
        if not reporting:
            return None

        def values(name: str) -> list[float]:
            readings = metrics.get(name, {})
            return [readings[r] for r in reporting if r in readings]

        kv = values(KV_USAGE)
        return cls(
            replicas=len(reporting),
            running=sum(values(RUNNING)),
            waiting=sum(values(WAITING)) + handle_queued,
            pending_prefill_tokens=sum(values(PENDING_PREFILL_TOKENS)),
            kv_usage=sum(kv) / len(kv) if kv else 0.0,
            ttft_p90_s=max(values(TTFT_P90_S), default=0.0),
            output_tokens_per_s=sum(values(OUTPUT_TOKENS_PER_S)),
        )

    def linear_ratios(self, objectives: Objectives) -> dict[str, float]:
        """Per-replica load over its limit, for the signals that split evenly over replicas."""
        per_replica = 1.0 / self.replicas
        return {
            "ongoing requests": (self.running + self.waiting)
            * per_replica
            / objectives.target_ongoing_requests,
            "waiting requests": self.waiting * per_replica / objectives.max_waiting_per_replica,
            "pending prefill tokens": self.pending_prefill_tokens
            * per_replica
            / objectives.max_pending_prefill_tokens,
            "KV cache usage": self.kv_usage / objectives.kv_usage_high,
        }

    def ttft_ratio(self, objectives: Objectives) -> float:
        return self.ttft_p90_s / objectives.ttft_p90_objective_s


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int
    reason: str


def decide(load: FleetLoad, target: int, objectives: Objectives) -> Decision:
    """The replica count ``load`` calls for, given the current ``target`` count.

    Bounds are not applied here (Serve applies them, and so does the policy class).
    """
    linear = load.linear_ratios(objectives)
    ratios = {**linear, "TTFT p90": load.ttft_ratio(objectives)}
    worst = max(ratios, key=ratios.__getitem__)
    n = load.replicas
    if ratios[worst] > 1.0:
        growth = min(ratios[worst], MAX_GROWTH_FACTOR)
        wanted = max(n + 1, math.ceil(n * growth), target)
        return Decision(wanted, f"{worst} at {ratios[worst]:.2f}x its limit")
    if ratios["TTFT p90"] > objectives.scale_in_ratio:
        return Decision(target, "within the band")
    fewest = math.ceil(n * max(linear.values()) / objectives.scale_in_ratio)
    if fewest < min(n, target):
        return Decision(fewest, f"load fits {fewest} replica(s) under {objectives.scale_in_ratio}x")
    return Decision(target, "within the band")


class PrismAutoscalingPolicy:
    """Serve's policy callable.

    ``policy_kwargs`` are fields of :class:`prism.config.AutoscalingSettings` (Serve passes
    them as JSON); those left out take the settings' defaults.
    """

    def __init__(self, **settings: float) -> None:
        limits = AutoscalingSettings.model_validate(settings).objectives()
        self.objectives = Objectives(**limits)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        """Serve's hook: ``ctx`` is a ``ray.serve.config.AutoscalingContext``."""
        state = dict(ctx.policy_state)
        load = FleetLoad.from_metrics(
            ctx.aggregated_metrics or {},
            list(ctx.running_replicas),
            ctx.total_queued_requests or 0.0,
        )
        if load is None:
            return ctx.target_num_replicas, state
        decision = decide(load, ctx.target_num_replicas, self.objectives)
        replicas = min(
            max(decision.replicas, ctx.capacity_adjusted_min_replicas),
            ctx.capacity_adjusted_max_replicas,
        )
        if replicas != ctx.target_num_replicas and state.get("wanted") != replicas:
            logger.info(
                "%s: wants %d replicas, target now %d (%s; %d running, %.0f waiting, %.1f tok/s)",
                ctx.deployment_name,
                replicas,
                ctx.target_num_replicas,
                decision.reason,
                round(load.running),
                load.waiting,
                load.output_tokens_per_s,
            )
        state["wanted"] = replicas
        state["reason"] = decision.reason
        return replicas, state
