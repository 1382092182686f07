"""The chaos benchmark's timeline: request outcomes and TTFT over time, with the faults."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prism.bench.chaos.outcomes import Outcome
from prism.bench.chaos.results import FAULT_NAMES, ChaosResult, FaultKind

OUTCOME_COLORS = {
    Outcome.COMPLETED: "tab:green",
    Outcome.CANCELLED: "tab:gray",
    Outcome.RETRYABLE: "tab:orange",
    Outcome.FAILED: "tab:red",
    Outcome.LOST: "black",
}
FAULT_STYLES = {
    FaultKind.REPLICA_KILL: ("tab:red", "-"),
    FaultKind.REDIS_RESTART: ("tab:blue", "--"),
    FaultKind.STEP_FAULT: ("tab:purple", ":"),
}
MAX_BINS = 300


def _draw_outcomes(axes: Axes, result: ChaosResult) -> None:
    """Requests ended per time bin, stacked by outcome."""
    end = max([result.settings.duration_s, *(entry.ended_at for entry in result.ledger)])
    width = float(max(1, math.ceil(end / MAX_BINS)))  # whole seconds
    edges = [width * step for step in range(math.ceil(end / width) + 1)]
    outcomes = list(OUTCOME_COLORS)
    axes.hist(
        [[e.ended_at for e in result.ledger if e.outcome == outcome] for outcome in outcomes],
        bins=edges,
        stacked=True,
        color=[OUTCOME_COLORS[outcome] for outcome in outcomes],
        label=[outcome.value for outcome in outcomes],
    )
    axes.set_ylabel(f"requests ended\nper {width:g} s")
    axes.legend(loc="upper left", ncols=len(outcomes), fontsize="small")


def _draw_ttft(axes: Axes, result: ChaosResult) -> None:
    """Each request's time to first token, at the time it was sent, coloured by outcome."""
    for outcome, color in OUTCOME_COLORS.items():
        timed = [
            (e.sent_at, e.ttft)
            for e in result.ledger
            if e.outcome == outcome and e.ttft is not None
        ]
        axes.scatter([at for at, _ in timed], [ttft for _, ttft in timed], s=6, color=color)
    axes.set_ylabel("time to first token (s)\nby time sent")
    axes.set_xlabel("time since the load started (s)")


def _draw_faults(axes: Axes, result: ChaosResult, label: bool) -> None:
    """A vertical line at each fault injected, one style per kind."""
    labelled: set[FaultKind] = set()
    for fault in result.faults:
        if fault.error is not None:
            continue
        color, style = FAULT_STYLES[fault.kind]
        name = FAULT_NAMES[fault.kind] if label and fault.kind not in labelled else None
        labelled.add(fault.kind)
        axes.axvline(fault.at, color=color, linestyle=style, linewidth=1.0, label=name)


def write_chaos_plot(result: ChaosResult, path: Path) -> None:
    """Request outcomes and TTFT over time, faults marked on both, sharing the time axis."""
    figure = Figure(figsize=(11, 7), layout="constrained")
    outcome_axes, ttft_axes = figure.subplots(2, 1, sharex=True)
    _draw_outcomes(outcome_axes, result)
    _draw_ttft(ttft_axes, result)
    _draw_faults(outcome_axes, result, label=False)
    _draw_faults(ttft_axes, result, label=True)
    if ttft_axes.get_legend_handles_labels()[0]:
        ttft_axes.legend(loc="upper left", fontsize="small")
    for axes in (outcome_axes, ttft_axes):
        axes.grid(True, alpha=0.3)
    figure.suptitle(
        f"Prism under chaos: {result.model}, {result.replicas} replicas, "
        f"{result.settings.concurrency} clients"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
