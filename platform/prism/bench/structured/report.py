"""Present a structured-output benchmark: a text table and a JSON record."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from prism.bench.engine.results import PhaseRun
from prism.bench.records import write_record
from prism.bench.stats import Spread
from prism.bench.structured.bench import StructuredBenchResult

COST_TARGET = 0.15
"""The most of the tokens/s that constrained decoding may cost."""


def _rates(runs: list[PhaseRun]) -> Spread:
    return Spread.of([run.tokens_per_second for run in runs])


def _rate_cell(spread: Spread) -> str:
    return f"{spread.median:>10.1f} ({spread.minimum:.1f}-{spread.maximum:.1f})"


def format_report(result: StructuredBenchResult) -> str:
    """Tokens/s free and constrained (median and range), the cost, and compile times."""
    workload = result.workload
    compile_ = result.compile
    free, constrained = _rates(result.free), _rates(result.constrained)
    verdict = "within" if result.cost <= COST_TARGET else "over"
    return "\n".join(
        [
            f"Structured output: {result.model_id}, {result.dtype}, {result.machine.device} "
            f"({result.machine.device_name}), {result.threads} threads, "
            f"{len(result.free)} rounds",
            f"batch of {workload.num_requests} requests x {workload.output_tokens} tokens, "
            "greedy; constrained: a JSON schema (an array of records)",
            "",
            f"{'tokens/s, median (range)':<28}{'free':>24}{'JSON schema':>26}",
            f"{'':<28}{_rate_cell(free):>24}{_rate_cell(constrained):>26}",
            f"cost: {result.cost:.1%} of tokens/s ({verdict} the {COST_TARGET:.0%} target)",
            "",
            f"grammar compile: first {compile_.first_seconds * 1e3:.1f} ms (sets up the "
            f"tokenizer's tables), a new schema "
            f"{statistics.median(compile_.new_schema_seconds) * 1e3:.2f} ms (median of "
            f"{len(compile_.new_schema_seconds)}), cached {compile_.cached_seconds * 1e3:.3f} ms",
        ]
    )


def to_json(result: StructuredBenchResult) -> dict[str, Any]:
    return {"benchmark": "engine-structured", "cost": result.cost, **dataclasses.asdict(result)}


def write_json(result: StructuredBenchResult, path: Path) -> None:
    """Write :func:`to_json` of ``result`` to ``path``, creating its folder."""
    write_record(to_json(result), path)
