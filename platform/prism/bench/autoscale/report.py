"""The autoscaling benchmark's table, JSON record and plot."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prism.bench.autoscale.bench import AutoscaleResult
from prism.bench.records import write_record
from prism.bench.stats import percentile


@dataclass(frozen=True, slots=True)
class StepSummary:
    """What happened during one load step (the last "step" is the wind-down after it)."""

    clients: int
    start: float
    end: float
    replicas_low: int
    replicas_high: int
    requests: int
    errors: int
    ttft_p50: float | None
    ttft_p90: float | None


def _step_bounds(result: AutoscaleResult) -> list[tuple[int, float, float]]:
    bounds, start = [], 0.0
    for step in result.settings.steps:
        bounds.append((step.clients, start, start + step.seconds))
        start += step.seconds
    end = max([start, *(s.at for s in result.samples)])
    bounds.append((0, start, end))
    return bounds


def _within(at: float, start: float, end: float, open_ended: bool) -> bool:
    """Whether ``at`` falls in the step (the last one also takes whatever comes after)."""
    return start <= at and (at < end or open_ended)


def summarize_steps(result: AutoscaleResult) -> list[StepSummary]:
    summaries = []
    bounds = _step_bounds(result)
    for index, (clients, start, end) in enumerate(bounds):
        last = index == len(bounds) - 1
        before = [s.running for s in result.samples if s.at < start][-1:] or [0]
        replicas = [s.running for s in result.samples if _within(s.at, start, end, last)] or before
        sent = [r.record for r in result.records if _within(r.sent_at, start, end, last)]
        ttfts = [r.ttft for r in sent if r.error is None and r.ttft is not None]
        summaries.append(
            StepSummary(
                clients=clients,
                start=start,
                end=end,
                replicas_low=min(replicas),
                replicas_high=max(replicas),
                requests=len(sent),
                errors=sum(r.error is not None for r in sent),
                ttft_p50=percentile(ttfts, 50),
                ttft_p90=percentile(ttfts, 90),
            )
        )
    return summaries


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_autoscale_report(result: AutoscaleResult) -> str:
    lines = [
        f"Autoscaling benchmark: {result.model}, {result.min_replicas}-{result.max_replicas} "
        f"replicas, {result.settings.max_tokens} output tokens per request",
        f"{'step':>14} {'clients':>8} {'replicas':>9} {'requests':>9} {'errors':>7} "
        f"{'TTFT p50 s':>11} {'TTFT p90 s':>11}",
    ]
    for step in summarize_steps(result):
        span = f"{step.start:.0f}-{step.end:.0f} s"
        replicas = (
            f"{step.replicas_low}"
            if step.replicas_low == step.replicas_high
            else f"{step.replicas_low}-{step.replicas_high}"
        )
        lines.append(
            f"{span:>14} {step.clients:>8} {replicas:>9} {step.requests:>9} {step.errors:>7} "
            f"{_seconds(step.ttft_p50):>11} {_seconds(step.ttft_p90):>11}"
        )
    return "\n".join(lines)


def write_autoscale_json(result: AutoscaleResult, path: Path) -> None:
    write_record(
        {
            "benchmark": "autoscale",
            "date": result.date,
            "machine": dataclasses.asdict(result.machine),
            "model": result.model,
            "replicas": {"min": result.min_replicas, "max": result.max_replicas},
            "settings": dataclasses.asdict(result.settings),
            "steps": [dataclasses.asdict(step) for step in summarize_steps(result)],
            "samples": [dataclasses.asdict(sample) for sample in result.samples],
            "requests": [
                {
                    "sent_at": r.sent_at,
                    "ttft": r.record.ttft,
                    "seconds": r.record.finished,
                    "completion_tokens": r.record.completion_tokens,
                    "replica": r.record.replica,
                    "error": r.record.error,
                }
                for r in result.records
            ],
        },
        path,
    )


def write_autoscale_plot(result: AutoscaleResult, path: Path) -> None:
    """Offered load, replicas and TTFT over time, one panel each, sharing the time axis."""
    figure = Figure(figsize=(10, 8), layout="constrained")
    load_axes, replica_axes, ttft_axes = figure.subplots(3, 1, sharex=True)
    bounds = _step_bounds(result)
    times = [start for _, start, _ in bounds] + [bounds[-1][2]]
    clients = [count for count, _, _ in bounds] + [0]
    load_axes.step(times, clients, where="post", color="C0")
    load_axes.set_ylabel("offered load\n(concurrent clients)")
    load_axes.set_ylim(bottom=0)

    at = [s.at for s in result.samples]
    replica_axes.step(at, [s.running for s in result.samples], where="post", label="running")
    replica_axes.step(
        at,
        [s.running + s.starting for s in result.samples],
        where="post",
        linestyle="--",
        label="running + starting",
    )
    replica_axes.axhline(result.max_replicas, color="grey", linewidth=0.8, linestyle=":")
    replica_axes.set_ylabel("replicas")
    replica_axes.set_ylim(0, result.max_replicas + 0.5)
    replica_axes.legend(loc="upper right")

    done = [r for r in result.records if r.record.error is None and r.record.ttft is not None]
    ttft_axes.scatter(
        [r.sent_at for r in done], [r.record.ttft for r in done], s=6, color="C3", alpha=0.5
    )
    failed = [r.sent_at for r in result.records if r.record.error is not None]
    if failed:
        ttft_axes.scatter(failed, [0] * len(failed), marker="x", color="black", label="error")
        ttft_axes.legend(loc="upper right")
    ttft_axes.set_ylabel("time to first token (s)\nby time sent")
    ttft_axes.set_xlabel("time since the load started (s)")
    for axes in (load_axes, replica_axes, ttft_axes):
        axes.grid(True, alpha=0.3)
    figure.suptitle(
        f"Prism autoscaling: {result.model}, {result.min_replicas}-{result.max_replicas} replicas"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
