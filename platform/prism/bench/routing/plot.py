"""The routing benchmark's picture: TTFT distribution and prefix-cache hit ratio per policy."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from prism.bench.routing.results import PolicyResult, RoutingBenchResult


def _ttfts(policy: PolicyResult) -> list[float]:
    return sorted(
        record.result.ttft
        for record in policy.records
        if record.result.error is None and record.result.ttft is not None
    )


def _draw_ttft_cdf(axes: Axes, result: RoutingBenchResult) -> None:
    for color, policy in enumerate(result.policies):
        ttfts = _ttfts(policy)
        shares = [(rank + 1) / len(ttfts) for rank in range(len(ttfts))]
        axes.step(ttfts, shares, where="post", color=f"C{color}", label=policy.summary.policy)
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("time to first token (s, log scale)")
    axes.set_ylabel("share of requests")
    axes.set_ylim(0, 1.02)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    axes.set_title("TTFT distribution")


def _draw_hit_ratios(axes: Axes, result: RoutingBenchResult) -> None:
    summaries = [policy.summary for policy in result.policies]
    names = [summary.policy for summary in summaries]
    colors = [f"C{color}" for color in range(len(summaries))]
    axes.bar(names, [summary.hit_ratio or 0.0 for summary in summaries], color=colors)
    axes.scatter(
        names,
        [summary.ideal_hit_ratio or 0.0 for summary in summaries],
        marker="_",
        s=900,
        color="black",
        label="ideal (every earlier prompt cached)",
        zorder=3,
    )
    axes.set_ylim(0, 1.15)  # room for the legend above a full bar
    axes.set_ylabel("cached prompt tokens / prompt tokens")
    axes.legend()
    axes.set_title("prefix-cache hit ratio")


def write_routing_plot(result: RoutingBenchResult, path: Path) -> None:
    """Write a PNG to ``path``: each policy's TTFT CDF, and its hit ratio against the ideal."""
    figure = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    ttft_axes, hit_axes = figure.subplots(1, 2, width_ratios=(2, 1))
    _draw_ttft_cdf(ttft_axes, result)
    _draw_hit_ratios(hit_axes, result)
    figure.suptitle(f"{result.model_id}: {result.workload.describe()}", fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
