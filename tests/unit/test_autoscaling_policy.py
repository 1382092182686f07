"""The autoscaling policy: replica counts from the load replicas report, with hysteresis."""

from __future__ import annotations

import pytest
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from prism.autoscaling.policy import Objectives, PrismAutoscalingPolicy
from prism.autoscaling.signals import (
    KV_USAGE,
    OUTPUT_TOKENS_PER_S,
    PENDING_PREFILL_TOKENS,
    RUNNING,
    TTFT_P90_S,
    WAITING,
    RecentRequests,
)
from prism.config import AutoscalingSettings

QUIET = {
    RUNNING: 0.0,
    WAITING: 0.0,
    KV_USAGE: 0.0,
    PENDING_PREFILL_TOKENS: 0.0,
    TTFT_P90_S: 0.0,
    OUTPUT_TOKENS_PER_S: 0.0,
}


def context(
    readings: list[dict[str, float]],
    target: int | None = None,
    min_replicas: int = 1,
    max_replicas: int = 8,
    handle_queued: float = 0.0,
    stale: dict[str, float] | None = None,
) -> AutoscalingContext:
    """A Serve context whose running replicas report ``readings`` (QUIET where left out)."""
    replicas = [f"replica-{i}" for i in range(len(readings))]
    metrics: dict[str, dict[str, float]] = {name: {} for name in QUIET}
    for replica, reading in zip(replicas, readings, strict=True):
        for name, value in {**QUIET, **reading}.items():
            metrics[name][replica] = value
    for name, value in (stale or {}).items():
        metrics[name]["stopped-replica"] = value
    return AutoscalingContext(
        deployment_id=None,
        deployment_name="LLMServer:m",
        app_name="prism",
        current_num_replicas=len(replicas),
        target_num_replicas=len(replicas) if target is None else target,
        running_replicas=replicas,
        total_num_requests=0.0,
        total_queued_requests=handle_queued,
        aggregated_metrics=metrics,
        raw_metrics=None,
        capacity_adjusted_min_replicas=min_replicas,
        capacity_adjusted_max_replicas=max_replicas,
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=0.0,
        config=AutoscalingConfig(min_replicas=min_replicas, max_replicas=max_replicas),
    )


def replicas_for(ctx: AutoscalingContext, **objectives: float) -> int:
    return PrismAutoscalingPolicy(**objectives)(ctx)[0]


def test_no_report_yet_keeps_the_target() -> None:
    ctx = context([], target=2)
    assert replicas_for(ctx) == 2


def test_waiting_requests_over_their_limit_add_replicas() -> None:
    assert replicas_for(context([{RUNNING: 8, WAITING: 6}]), max_waiting_per_replica=4) == 2


def test_one_decision_at_most_doubles_the_replicas() -> None:
    overloaded = {RUNNING: 64, WAITING: 100}
    assert replicas_for(context([overloaded, overloaded])) == 4


def test_slow_first_tokens_add_a_replica_even_with_short_queues() -> None:
    readings = [{RUNNING: 4, TTFT_P90_S: 2.5}, {RUNNING: 4, TTFT_P90_S: 0.3}]
    assert replicas_for(context(readings), ttft_p90_objective_s=2.0) == 3


def test_full_kv_cache_adds_a_replica() -> None:
    assert replicas_for(context([{RUNNING: 2, KV_USAGE: 0.97}]), kv_usage_high=0.9) == 2


def test_prefill_backlog_adds_replicas() -> None:
    readings = [{RUNNING: 2, PENDING_PREFILL_TOKENS: 30_000}]
    assert replicas_for(context(readings), max_pending_prefill_tokens=8192) == 2


def test_requests_queued_in_serve_handles_count_as_waiting() -> None:
    assert replicas_for(context([{RUNNING: 8}], handle_queued=10), max_waiting_per_replica=4) == 2


def test_load_inside_the_band_holds_the_count() -> None:
    objectives = {"target_ongoing_requests": 10, "scale_in_ratio": 0.5}
    for ongoing in (6, 8, 10, 7, 9):  # 60-100 % of the target: neither out nor in
        readings = [{RUNNING: ongoing}] * 3
        assert replicas_for(context(readings), **objectives) == 3


def test_scale_in_goes_to_the_fewest_replicas_that_stay_under_the_ratio() -> None:
    readings = [{RUNNING: 2}] * 4  # 8 ongoing over 4 replicas, target 10 each
    assert replicas_for(context(readings), target_ongoing_requests=10, scale_in_ratio=0.5) == 2


def test_no_scale_in_while_first_tokens_are_slow() -> None:
    readings = [{RUNNING: 1, TTFT_P90_S: 1.5}] * 3
    assert replicas_for(context(readings), ttft_p90_objective_s=2.0, scale_in_ratio=0.5) == 3


def test_idle_fleet_returns_to_min_replicas() -> None:
    assert replicas_for(context([QUIET] * 4, min_replicas=2)) == 2
    assert replicas_for(context([QUIET] * 4, min_replicas=0)) == 0


def test_the_maximum_bounds_scale_out() -> None:
    overloaded = {RUNNING: 64, WAITING: 64}
    assert replicas_for(context([overloaded] * 3, max_replicas=4)) == 4


def test_replicas_still_starting_are_not_cancelled_while_overloaded() -> None:
    ctx = context([{RUNNING: 64, WAITING: 8}], target=3)
    assert replicas_for(ctx) == 3


def test_readings_of_replicas_no_longer_running_are_ignored() -> None:
    ctx = context([QUIET, QUIET], stale={RUNNING: 500, WAITING: 500})
    assert replicas_for(ctx) == 1


def test_policy_state_keeps_serves_keys() -> None:
    ctx = context([{RUNNING: 8, WAITING: 20}])
    ctx.policy_state["serve-internal"] = 1
    replicas, state = PrismAutoscalingPolicy()(ctx)
    assert replicas == 2
    assert state["serve-internal"] == 1
    assert "waiting requests" in state["reason"]


def test_config_objectives_are_the_policy_keywords() -> None:
    settings = AutoscalingSettings(max_replicas=4, ttft_p90_objective_s=0.5)
    assert Objectives(**settings.objectives()).ttft_p90_objective_s == 0.5


def test_look_back_must_exceed_the_push_interval() -> None:
    with pytest.raises(ValueError, match="look_back_s must exceed"):
        AutoscalingSettings(look_back_s=2, metrics_push_interval_s=2)


def test_recent_ttft_p90_counts_requests_still_waiting() -> None:
    recent = RecentRequests(window_s=30)
    for i in range(9):
        recent.arrived(f"r{i}", at=0.0)
        recent.produced(f"r{i}", 1, at=0.1)
    assert recent.ttft_p90(now=1.0) == pytest.approx(0.1)
    recent.arrived("stuck", at=0.0)
    recent.arrived("stuck-too", at=0.5)
    assert recent.ttft_p90(now=5.0) == pytest.approx(4.5)
    recent.left("stuck")
    recent.left("stuck-too")
    assert recent.ttft_p90(now=5.0) == pytest.approx(0.1)


def test_recent_window_forgets_old_requests() -> None:
    recent = RecentRequests(window_s=10)
    recent.arrived("a", at=0.0)
    recent.produced("a", 1, at=3.0)
    recent.produced("a", 19, at=4.0)
    assert recent.output_tokens_per_s(now=5.0) == pytest.approx(2.0)
    assert recent.ttft_p90(now=5.0) == pytest.approx(3.0)
    assert recent.output_tokens_per_s(now=20.0) == 0.0
    assert recent.ttft_p90(now=20.0) == 0.0
