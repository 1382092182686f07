"""Present an engine benchmark result: a text table for the terminal and a JSON record."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from prism.bench.engine.results import EngineBenchResult, EngineRun
from prism.bench.records import LABEL_WIDTH, VALUE_WIDTH, cell, write_record

_MIB = 1 << 20


class _Row(NamedTuple):
    """One table line: the same measure read from each engine's run."""

    label: str
    value: Callable[[EngineRun], float | None]
    spec: str
    ratio: float | None = None


def _mib(value: int | None) -> float | None:
    return None if value is None else value / _MIB


def _added(run: EngineRun) -> int | None:
    memory = run.memory
    if memory.peak_bytes is None or memory.baseline_bytes is None:
        return None
    return memory.peak_bytes - memory.baseline_bytes


def _rows(result: EngineBenchResult) -> list[_Row]:
    batch = f"{result.workload.num_requests} requests"
    memory = "GPU allocated" if result.machine.device.startswith("cuda") else "RSS"
    return [
        _Row(
            f"{batch}: output tok/s", lambda r: r.batch.tokens_per_second, ".1f", result.batch_ratio
        ),
        _Row(f"{batch}: mean TTFT s", lambda r: r.batch.ttft_mean_seconds, ".3f"),
        _Row(
            "1 request: decode tok/s",
            lambda r: r.single.decode_tokens_per_second,
            ".1f",
            result.single_decode_ratio,
        ),
        _Row("1 request: TTFT s", lambda r: r.single.ttft_seconds, ".3f"),
        _Row(
            f"{result.workload.prefill_tokens}-token prefill s",
            lambda r: r.prefill_seconds,
            ".3f",
        ),
        _Row("load s", lambda r: r.load_seconds, ".2f"),
        _Row(f"peak {memory} MiB", lambda r: _mib(r.memory.peak_bytes), ".0f"),
        _Row(f"{memory} added MiB", lambda r: _mib(_added(r)), ".0f"),
    ]


def format_report(result: EngineBenchResult) -> str:
    """A table of Prism against HF ``generate`` (HF cells show ``-`` when it was skipped)."""
    machine, workload = result.machine, result.workload
    lengths = sorted(result.prompt_tokens)
    lines = [
        f"Engine benchmark: {result.model_id}, {result.dtype} on {machine.device} "
        f"(Prism's weights {result.prism_weight_dtype}) "
        f"({machine.device_name}), {machine.torch_threads} torch threads, "
        f"torch {machine.torch_version}",
        f"workload: {workload.num_requests} requests x {workload.output_tokens} output tokens, "
        f"prompts of {lengths[0]}-{lengths[-1]} tokens, greedy, EOS ignored",
        "",
        f"{'':<{LABEL_WIDTH}}{'Prism':>{VALUE_WIDTH}}{'HF':>{VALUE_WIDTH}}"
        f"{'Prism/HF':>{VALUE_WIDTH}}",
    ]
    for row in _rows(result):
        prism = cell(row.value(result.prism), row.spec)
        hf = cell(None if result.hf is None else row.value(result.hf), row.spec)
        ratio = "" if row.ratio is None else f"{row.ratio:>{VALUE_WIDTH - 1}.2f}x"
        lines.append(f"{row.label:<{LABEL_WIDTH}}{prism}{hf}{ratio}")
    return "\n".join(lines)


def _engine_json(run: EngineRun) -> dict[str, Any]:
    record = dataclasses.asdict(run)
    record["batch"]["output_tokens_per_second"] = run.batch.tokens_per_second
    record["single"]["decode_tokens_per_second"] = run.single.decode_tokens_per_second
    return record


def to_json(result: EngineBenchResult) -> dict[str, Any]:
    """The result as JSON-ready data: machine, model, workload, both engines and ratios."""
    return {
        "benchmark": "engine",
        "date": result.date,
        "machine": dataclasses.asdict(result.machine),
        "model": result.model_id,
        "dtype": result.dtype,
        "prism_weight_dtype": result.prism_weight_dtype,
        "workload": {
            **dataclasses.asdict(result.workload),
            "prompt_tokens_min": min(result.prompt_tokens),
            "prompt_tokens_max": max(result.prompt_tokens),
            "sampling": "greedy, EOS ignored",
        },
        "prism": _engine_json(result.prism),
        "hf": None if result.hf is None else _engine_json(result.hf),
        "ratio_prism_over_hf": {
            "batch_output_tokens_per_second": result.batch_ratio,
            "single_decode_tokens_per_second": result.single_decode_ratio,
        },
    }


def write_json(result: EngineBenchResult, path: Path) -> None:
    """Write :func:`to_json` of ``result`` to ``path``, creating its folder."""
    write_record(to_json(result), path)
