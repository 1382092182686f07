"""Present an engine benchmark result: a text table for the terminal and a JSON record.

Every figure is the median of the repeated runs, beside the range they spanned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from prism.bench.engine.results import (
    EngineBenchResult,
    EngineRun,
    PhaseRun,
    batch_tokens_per_second,
    decode_tokens_per_second,
    ttft_p50,
)
from prism.bench.records import LABEL_WIDTH, VALUE_WIDTH, cell, write_record
from prism.bench.stats import Spread

_MIB = 1 << 20
_MS = 1000.0
_RANGE_WIDTH = 18
_LABEL_WIDTH = LABEL_WIDTH + 4
_PHASES = ("single", "batch", "prefill")


class _Row(NamedTuple):
    """One table line: a measure of one phase, read from each engine's runs."""

    label: str
    phase: str
    measure: Callable[[PhaseRun], float | None]
    spec: str
    ratio: float | None = None


def _scaled(
    read: Callable[[PhaseRun], float | None], scale: float
) -> Callable[[PhaseRun], float | None]:
    def measure(run: PhaseRun) -> float | None:
        value = read(run)
        return None if value is None else value * scale

    return measure


def _rows(result: EngineBenchResult) -> list[_Row]:
    batch = f"{result.workload.num_requests} requests"
    return [
        _Row(f"{batch}: output tok/s", "batch", batch_tokens_per_second, ".1f", result.batch_ratio),
        _Row(f"{batch}: TTFT p50 s", "batch", ttft_p50, ".3f"),
        _Row(f"{batch}: TTFT p99 s", "batch", lambda r: r.ttft.p99, ".3f"),
        _Row(f"{batch}: TPOT p50 ms", "batch", _scaled(lambda r: r.tpot.p50, _MS), ".1f"),
        _Row(f"{batch}: TPOT p99 ms", "batch", _scaled(lambda r: r.tpot.p99, _MS), ".1f"),
        _Row(f"{batch}: ITL p50 ms", "batch", _scaled(lambda r: r.itl.p50, _MS), ".1f"),
        _Row(f"{batch}: ITL p99 ms", "batch", _scaled(lambda r: r.itl.p99, _MS), ".1f"),
        _Row(
            "1 request: decode tok/s",
            "single",
            decode_tokens_per_second,
            ".1f",
            result.single_decode_ratio,
        ),
        _Row("1 request: TTFT s", "single", ttft_p50, ".3f"),
        _Row("1 request: ITL p50 ms", "single", _scaled(lambda r: r.itl.p50, _MS), ".1f"),
        _Row("1 request: ITL p99 ms", "single", _scaled(lambda r: r.itl.p99, _MS), ".1f"),
        _Row(
            f"{result.workload.prefill_tokens}-token prefill s",
            "prefill",
            ttft_p50,
            ".3f",
            result.prefill_time_ratio,
        ),
    ]


def _range(spread: Spread | None, spec: str) -> str:
    if spread is None or spread.minimum is None or spread.maximum is None:
        return " " * _RANGE_WIDTH
    text = f"{spread.minimum:{spec}}-{spread.maximum:{spec}}"
    return f"{text:>{_RANGE_WIDTH}}"


def _engine_cells(run: EngineRun | None, row: _Row) -> str:
    spread = None if run is None else run.spread(row.phase, row.measure)
    return cell(None if spread is None else spread.median, row.spec) + _range(spread, row.spec)


def _mib(value: int | None) -> float | None:
    return None if value is None else value / _MIB


def _once_rows(result: EngineBenchResult) -> list[str]:
    """Measures taken once per engine: load time and memory."""
    memory = "GPU allocated" if result.machine.device.startswith("cuda") else "RSS"
    singles: list[tuple[str, Callable[[EngineRun], float | None], str]] = [
        ("load s", lambda r: r.load_seconds, ".2f"),
        (f"{memory} added MiB", lambda r: _mib(r.memory_added_bytes), ".0f"),
        ("weights MiB", lambda r: _mib(r.weight_bytes), ".1f"),
    ]
    blank = " " * _RANGE_WIDTH
    ratios = {"weights MiB": result.weight_ratio}
    lines = []
    for label, read, spec in singles:
        ratio = ratios.get(label)
        lines.append(
            f"{label:<{_LABEL_WIDTH}}{cell(read(result.prism), spec)}{blank}"
            f"{cell(None if result.hf is None else read(result.hf), spec)}{blank}"
            + ("" if ratio is None else f"{ratio:>{VALUE_WIDTH - 1}.2f}x")
        )
    return lines


def _cache_line(result: EngineBenchResult) -> str:
    """Prism's prefix-cache hits per phase (the cache is emptied before every run)."""
    parts = []
    for phase in _PHASES:
        runs: list[PhaseRun] = getattr(result.prism, phase)
        cached = max(run.cached_tokens for run in runs)
        parts.append(f"{phase} {cached}/{runs[0].prompt_tokens}")
    return "Prism prefix-cache hits per run (prompt tokens): " + ", ".join(parts)


def _title(result: EngineBenchResult) -> list[str]:
    machine, workload = result.machine, result.workload
    lengths = sorted(result.prompt_tokens)
    precision = f"{result.dtype} on both"
    if result.quantized:
        precision = (
            f"QUANTIZED (an extra, not like for like): Prism's matrices "
            f"{result.prism_quantization} weight-only, activations and HF {result.dtype}"
        )
    elif result.mixed_precision:
        precision = (
            f"MIXED PRECISION (an extra, not like for like): Prism's matrices "
            f"{result.prism_weight_dtype}, everything else and HF {result.dtype}"
        )
    hf_threads = "-" if result.hf_threads is None else result.hf_threads
    rounds = len(result.prism.batch)
    return [
        f"Engine benchmark: {result.model_id}, {precision}, {machine.device} "
        f"({machine.device_name}), torch {machine.torch_version}",
        f"threads: Prism {result.prism_threads}, HF {hf_threads}; workload: "
        f"{workload.num_requests} requests x {workload.output_tokens} output tokens, "
        f"prompts of {lengths[0]}-{lengths[-1]} tokens, greedy, EOS ignored",
        f"each figure: the median of {rounds} runs, then their range; each phase runs on "
        "both engines in turn (order swapped every round); the prefix cache is emptied "
        "before every run",
    ]


def format_report(result: EngineBenchResult) -> str:
    """A table of Prism against HF ``generate`` (HF cells show ``-`` when it was skipped)."""
    lines = [
        *_title(result),
        _cache_line(result),
        "",
        f"{'':<{_LABEL_WIDTH}}{'Prism':>{VALUE_WIDTH}}{'range':>{_RANGE_WIDTH}}"
        f"{'HF':>{VALUE_WIDTH}}{'range':>{_RANGE_WIDTH}}{'Prism/HF':>{VALUE_WIDTH}}",
    ]
    for row in _rows(result):
        ratio = "" if row.ratio is None else f"{row.ratio:>{VALUE_WIDTH - 1}.2f}x"
        lines.append(
            f"{row.label:<{_LABEL_WIDTH}}{_engine_cells(result.prism, row)}"
            f"{_engine_cells(result.hf, row)}{ratio}"
        )
    return "\n".join(lines + _once_rows(result))


def _engine_json(run: EngineRun, rows: list[_Row]) -> dict[str, Any]:
    record = dataclasses.asdict(run)
    record["summary"] = {
        row.label: dataclasses.asdict(spread)
        for row in rows
        if (spread := run.spread(row.phase, row.measure)) is not None
    }
    return record


def to_json(result: EngineBenchResult) -> dict[str, Any]:
    """The result as JSON-ready data: machine, model, workload, both engines and ratios."""
    rows = _rows(result)
    return {
        "benchmark": "engine",
        "date": result.date,
        "machine": dataclasses.asdict(result.machine),
        "model": result.model_id,
        "dtype": result.dtype,
        "prism_weight_dtype": result.prism_weight_dtype,
        "mixed_precision": result.mixed_precision,
        "prism_quantization": result.prism_quantization,
        "threads": {"prism": result.prism_threads, "hf": result.hf_threads},
        "rounds": len(result.prism.batch),
        "workload": {
            **dataclasses.asdict(result.workload),
            "prompt_tokens_min": min(result.prompt_tokens),
            "prompt_tokens_max": max(result.prompt_tokens),
            "sampling": "greedy, EOS ignored",
            "prefix_cache": "emptied before every run",
            "order": "each phase on both engines in turn, the order swapped every round",
        },
        "prism": _engine_json(result.prism, rows),
        "hf": None if result.hf is None else _engine_json(result.hf, rows),
        "ratio_prism_over_hf": {
            "batch_output_tokens_per_second": result.batch_ratio,
            "single_decode_tokens_per_second": result.single_decode_ratio,
            "prefill_seconds": result.prefill_time_ratio,
            "weight_bytes": result.weight_ratio,
        },
    }


def write_json(result: EngineBenchResult, path: Path) -> None:
    """Write :func:`to_json` of ``result`` to ``path``, creating its folder."""
    write_record(to_json(result), path)
