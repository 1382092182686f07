"""Present a serving benchmark result: a text table for the terminal and a JSON record."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prism.bench.records import LABEL_WIDTH, VALUE_WIDTH, cell, write_record
from prism.bench.serve.results import LoneSummary, ServeBenchResult
from prism.bench.stats import Percentiles

_MS = 1000.0
_PROTOCOL_NAMES = {"http": "HTTP (OpenAI API)", "grpc": "gRPC"}


def _latency_row(label: str, latency: Percentiles, scale: float, spec: str) -> str:
    cells = (None if value is None else value * scale for value in dataclasses.astuple(latency))
    return f"{label:<{LABEL_WIDTH}}" + "".join(cell(value, spec) for value in cells)


def _line(label: str, value: str) -> str:
    return f"{label:<{LABEL_WIDTH}}{value:>{VALUE_WIDTH}}"


def format_serve_report(result: ServeBenchResult) -> str:
    """Latency percentiles, throughput, errors, prefix-cache use and replicas, as a table."""
    workload, summary = result.workload, result.summary
    mean_prompt = summary.prompt_tokens / summary.completed if summary.completed else None
    cached = summary.cached_prompt_fraction
    lines = [
        f"Serving benchmark: {result.model_id} at {result.target} "
        f"over {_PROTOCOL_NAMES[result.protocol]}",
        f"workload: {workload.num_requests} requests x {workload.max_tokens} output tokens, "
        f"{workload.concurrency} concurrent streams, prompt set {workload.prompt_set} "
        f"({cell(mean_prompt, '.1f').strip()} prompt tokens on average), greedy, EOS ignored",
        "",
        f"{'':<{LABEL_WIDTH}}{'p50':>{VALUE_WIDTH}}{'p90':>{VALUE_WIDTH}}{'p99':>{VALUE_WIDTH}}",
        _latency_row("TTFT s", summary.ttft_seconds, 1.0, ".3f"),
        _latency_row("inter-token latency ms", summary.inter_token_seconds, _MS, ".1f"),
        _latency_row("end-to-end latency s", summary.end_to_end_seconds, 1.0, ".3f"),
        "",
        _line("requests/s", f"{summary.requests_per_second:.2f}"),
        _line("output tok/s", f"{summary.output_tokens_per_second:.1f}"),
        _line("wall time s", f"{summary.seconds:.2f}"),
        _line("errors", f"{summary.errors}"),
        _line("cached prompt tokens", "-" if cached is None else f"{cached:.1%}"),
    ]
    lines += [_line("replica " + name, f"{count} req") for name, count in summary.replicas.items()]
    if result.lone is not None:
        lines += ["", *_lone_lines(result.lone)]
    elif workload.lone_requests:
        lines += ["", "lone requests: not measured (gRPC replies carry no engine TTFT)"]
    return "\n".join(lines)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * _MS


def _ms_text(seconds: float | None, spec: str = ".1f") -> str:
    return "-" if seconds is None else format(seconds * _MS, spec)


def _lone_lines(lone: LoneSummary) -> list[str]:
    """Each lone request's TTFT over HTTP and in the engine, then the penalty and overhead."""
    columns = ("prompt tok", "HTTP ms", "engine ms", "overhead")
    lines = [
        "lone requests, one at a time before the load (1 token, not streamed), TTFT:",
        f"{'#  replica':<{LABEL_WIDTH}}" + "".join(f"{name:>{VALUE_WIDTH}}" for name in columns),
    ]
    for number, request in enumerate(lone.requests, start=1):
        times = (request.http_ttft_seconds, request.engine_ttft_seconds, request.overhead_seconds)
        label = f"{number:<3}{request.replica or '-'}"
        row = f"{label:<{LABEL_WIDTH}}{cell(request.prompt_tokens, 'd')}"
        row += "".join(cell(_ms(seconds), ".1f") for seconds in times)
        lines.append(row + (f"  error: {request.error}" if request.error else ""))
    overhead = lone.overhead_seconds
    return [
        *lines,
        _line("first vs rest (median) ms", _ms_text(lone.cold_start_penalty_seconds, "+.1f")),
        _line("serving overhead ms p50", _ms_text(overhead.median)),
        _line(
            "serving overhead ms min-max",
            f"{_ms_text(overhead.minimum)}-{_ms_text(overhead.maximum)}",
        ),
    ]


def _lone_json(lone: LoneSummary | None) -> dict[str, Any] | None:
    if lone is None:
        return None
    return {
        "requests": [
            {**dataclasses.asdict(request), "overhead_seconds": request.overhead_seconds}
            for request in lone.requests
        ],
        "cold_start_penalty_seconds": lone.cold_start_penalty_seconds,
        "overhead_seconds": dataclasses.asdict(lone.overhead_seconds),
    }


def serve_to_json(result: ServeBenchResult) -> dict[str, Any]:
    """The result as JSON-ready data: machine, server and protocol, workload, every measure.

    ``lone_requests`` (times in seconds) is null when none ran.
    """
    summary = result.summary
    return {
        "benchmark": "serve",
        "date": result.date,
        "machine": dataclasses.asdict(result.machine),
        "protocol": result.protocol,
        "target": result.target,
        "model": result.model_id,
        "workload": {
            **dataclasses.asdict(result.workload),
            "sampling": "greedy, EOS ignored, streamed",
        },
        "results": {
            **dataclasses.asdict(summary),
            "requests_per_second": summary.requests_per_second,
            "output_tokens_per_second": summary.output_tokens_per_second,
            "cached_prompt_fraction": summary.cached_prompt_fraction,
        },
        "lone_requests": _lone_json(result.lone),
    }


def write_serve_json(result: ServeBenchResult, path: Path) -> None:
    """Write :func:`serve_to_json` of ``result`` to ``path``, creating its folder."""
    write_record(serve_to_json(result), path)
