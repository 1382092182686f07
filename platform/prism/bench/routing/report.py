"""Present a routing benchmark result: a table with one row per policy, and a JSON record.

The router's decision times (measured apart from the load) close the table when present.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prism.bench.records import write_record
from prism.bench.routing.load import RoutedRecord
from prism.bench.routing.results import (
    BASELINE_POLICY,
    BaselineRatios,
    PolicySummary,
    RoutingBenchResult,
)

MIB = 1 << 20
_POLICY_WIDTH = 13
_COLUMNS = (
    ("ok", 5),
    ("errors", 8),
    ("hit", 8),
    ("ideal", 8),
    ("of ideal", 10),
    ("TTFT mean s", 13),
    ("p50", 8),
    ("p90", 8),
    ("p99", 8),
    ("out tok/s", 11),
    ("precision", 11),
)
_RATIO_COLUMNS = (("TTFT mean", 11), ("TTFT p90", 11), ("out tok/s", 11))


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row(label: str, cells: list[str], widths: tuple[tuple[str, int], ...], tail: str) -> str:
    row = f"{label:<{_POLICY_WIDTH}}"
    row += "".join(f"{text:>{width}}" for text, (_, width) in zip(cells, widths, strict=True))
    return f"{row}  {tail}".rstrip()


def _policy_cells(summary: PolicySummary) -> list[str]:
    ttft = summary.ttft_seconds
    return [
        str(summary.completed),
        str(summary.errors),
        _number(summary.hit_ratio, ".1%"),
        _number(summary.ideal_hit_ratio, ".1%"),
        _number(summary.hit_of_ideal, ".1%"),
        _number(summary.ttft_mean_seconds, ".3f"),
        _number(ttft.p50, ".3f"),
        _number(ttft.p90, ".3f"),
        _number(ttft.p99, ".3f"),
        _number(summary.output_tokens_per_second, ".1f"),
        _number(summary.routing_precision, ".1%"),
    ]


def _per_replica(summary: PolicySummary) -> str:
    return "/".join(str(count) for count in summary.replicas.values())


def _ratio_lines(ratios: list[BaselineRatios]) -> list[str]:
    if not ratios:
        return []
    header = [name for name, _ in _RATIO_COLUMNS]
    lines = ["", _row(f"vs {BASELINE_POLICY}", header, _RATIO_COLUMNS, "")]
    for ratio in ratios:
        values = (ratio.ttft_mean, ratio.ttft_p90, ratio.output_tokens_per_second)
        cells = [_number(value, ".2f") + ("x" if value is not None else "") for value in values]
        lines.append(_row(ratio.policy, cells, _RATIO_COLUMNS, ""))
    return lines


def _decision_lines(decision: dict[str, float] | None) -> list[str]:
    if not decision:
        return []
    times = ", ".join(f"{label} {decision[f'{label}_ms']:.3f}" for label in _DECISION_LABELS)
    setup = (
        f"{decision['prompt_tokens']:g}-token prompt ({decision['blocks']:g} blocks), "
        f"{decision['replicas']:g} replicas"
    )
    return ["", f"router decision time ms ({setup}, Redis on loopback): {times}"]


_DECISION_LABELS = ("p50", "p90", "p99", "max")


def _error_lines(result: RoutingBenchResult) -> list[str]:
    return [
        f"error under {policy.summary.policy} ({count}x): {message}"
        for policy in result.policies
        for message, count in policy.summary.error_messages.items()
    ]


def format_routing_report(result: RoutingBenchResult) -> str:
    """One row per policy (cache hits against the ideal, TTFT, throughput, routing precision,
    requests per replica), ratios against pow2 when it ran, and router decision times."""
    deployment, load = result.deployment, result.load
    arrivals = (
        f"{load.concurrency} concurrent streams"
        if load.rate is None
        else f"Poisson arrivals at {load.rate:g} req/s"
    )
    header = [name for name, _ in _COLUMNS]
    lines = [
        f"Routing benchmark: {result.model_id}, {deployment.replicas} replicas "
        f"({deployment.kv_cache_bytes / MIB:g} MiB KV cache, {deployment.num_cpus:.2g} CPU each), "
        f"{deployment.ingress_replicas} ingress",
        f"workload: {result.workload.describe()}; {arrivals}, greedy, EOS ignored",
        "",
        _row("policy", header, _COLUMNS, "requests per replica"),
    ]
    lines += [
        _row(p.summary.policy, _policy_cells(p.summary), _COLUMNS, _per_replica(p.summary))
        for p in result.policies
    ]
    lines += _ratio_lines(result.baseline_ratios())
    lines += _decision_lines(result.decision_ms)
    errors = _error_lines(result)
    if errors:
        lines += ["", *errors]
    return "\n".join(lines)


def _summary_json(summary: PolicySummary) -> dict[str, Any]:
    return {
        **dataclasses.asdict(summary),
        "hit_ratio": summary.hit_ratio,
        "ideal_hit_ratio": summary.ideal_hit_ratio,
        "hit_of_ideal": summary.hit_of_ideal,
        "output_tokens_per_second": summary.output_tokens_per_second,
        "routing_precision": summary.routing_precision,
    }


def _request_json(record: RoutedRecord) -> dict[str, Any]:
    request, result = record.request, record.result
    return {
        "index": request.index,
        "group": request.group,
        "prompt_tokens": len(request.prompt),
        "cached_tokens": result.cached_tokens,
        "ideal_cached_tokens": request.ideal_cached_tokens,
        "predicted_cached_tokens": record.predicted_cached_tokens,
        "replica": result.replica,
        "sent_s": record.sent,
        "ttft_s": result.ttft,
        "end_to_end_s": result.finished,
        "output_tokens": result.completion_tokens,
        "error": result.error,
    }


def routing_to_json(result: RoutingBenchResult) -> dict[str, Any]:
    """The result as JSON-ready data: setup, per-policy summaries and every request."""
    record: dict[str, Any] = {
        "benchmark": "routing",
        "date": result.date,
        "machine": dataclasses.asdict(result.machine),
        "model": result.model_id,
        "deployment": dataclasses.asdict(result.deployment),
        "workload": {
            **dataclasses.asdict(result.workload),
            "sampling": "greedy, EOS ignored, streamed",
        },
        "load": dataclasses.asdict(result.load),
        "policies": [
            {
                "policy": policy.summary.policy,
                "summary": _summary_json(policy.summary),
                "requests": [_request_json(r) for r in policy.records],
            }
            for policy in result.policies
        ],
        f"vs_{BASELINE_POLICY}": [dataclasses.asdict(r) for r in result.baseline_ratios()],
    }
    if result.decision_ms:
        record["router_decision"] = result.decision_ms
    return record


def write_routing_json(result: RoutingBenchResult, path: Path) -> None:
    """Write :func:`routing_to_json` of ``result`` to ``path``, creating its folder."""
    write_record(routing_to_json(result), path)
