"""The chaos benchmark's table and JSON record."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prism.bench.chaos.results import FAULT_NAMES, ChaosResult, ChaosSummary, FaultKind, summarize
from prism.bench.records import LABEL_WIDTH, VALUE_WIDTH, cell, write_record


def _line(label: str, value: str, note: str = "") -> str:
    return f"{label:<{LABEL_WIDTH}}{value:>{VALUE_WIDTH}}" + (f"  {note}" if note else "")


def _intervals(result: ChaosResult) -> dict[FaultKind, float]:
    settings = result.settings
    return {
        FaultKind.REPLICA_KILL: settings.kill_every_s,
        FaultKind.REDIS_RESTART: settings.redis_restart_every_s,
        FaultKind.STEP_FAULT: settings.fault_every_s,
    }


def _fault_line(result: ChaosResult, summary: ChaosSummary) -> str:
    parts = []
    for kind, every_s in _intervals(result).items():
        name = FAULT_NAMES[kind]
        parts.append(
            f"{name} every {every_s:g} s ({summary.faults[kind]})" if every_s else f"{name} off"
        )
    not_injected = (
        f"; {summary.faults_not_injected} could not be injected"
        if summary.faults_not_injected
        else ""
    )
    return "faults (injected): " + ", ".join(parts) + not_injected


def format_chaos_report(result: ChaosResult) -> str:
    """The requests by outcome, the faults, the KV check and the verdict, as a table."""
    settings, summary = result.settings, summarize(result)
    kv = result.kv
    seen = f"{len(kv.replicas)} of {kv.expected_replicas} replicas seen"
    lines = [
        f"Chaos benchmark: {result.model}, {result.replicas} replicas, "
        f"{settings.concurrency} streaming clients for {settings.duration_s:g} s, "
        f"{settings.max_tokens} tokens per request, {settings.cancel_share:.0%} closed by the "
        f"client after {settings.cancel_after_chunks} chunks",
        _fault_line(result, summary),
        "",
        _line("requests sent", f"{summary.requests}"),
        _line("accepted", f"{summary.accepted}", "HTTP 200, stream started"),
        _line("completed", f"{summary.completed}"),
        _line("cancelled by the client", f"{summary.cancelled}"),
        _line("failed, retryable", f"{summary.retryable}", "429 / 503"),
        _line("failed, not retryable", f"{summary.failed}"),
        _line("lost", f"{summary.lost}", "accepted, then neither completed nor errored"),
        _line(
            "KV blocks used when idle",
            f"{summary.leaked_kv_blocks}",
            f"{seen}, {'all idle' if kv.settled else 'not all idle'}",
        ),
        f"{'TTFT p99 s':<{LABEL_WIDTH}}{cell(summary.ttft_p99, '.3f')}",
        "",
        "FAIL: " + "; ".join(summary.problems) if summary.problems else "PASS",
    ]
    return "\n".join(lines)


def chaos_to_json(result: ChaosResult) -> dict[str, Any]:
    """The result as JSON-ready data: machine, settings, summary, faults, KV check, requests."""
    summary = summarize(result)
    kv = result.kv
    return {
        "benchmark": "chaos",
        "date": result.date,
        "machine": dataclasses.asdict(result.machine),
        "model": result.model,
        "replicas": result.replicas,
        "settings": dataclasses.asdict(result.settings),
        "summary": {**dataclasses.asdict(summary), "problems": summary.problems},
        "passed": not summary.problems,
        "faults": [dataclasses.asdict(fault) for fault in result.faults],
        "kv": {
            "expected_replicas": kv.expected_replicas,
            "settled": kv.settled,
            "leaked_blocks": kv.leaked_blocks,
            "replicas": [dataclasses.asdict(replica) for replica in kv.replicas],
        },
        "requests": [dataclasses.asdict(entry) for entry in result.ledger],
    }


def write_chaos_json(result: ChaosResult, path: Path) -> None:
    write_record(chaos_to_json(result), path)
