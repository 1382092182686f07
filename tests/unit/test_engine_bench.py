"""The engine benchmark's measures: derived alike for both engines, medians with their range."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from prism.bench.engine.report import format_report, to_json
from prism.bench.engine.results import (
    EngineBenchResult,
    EngineRun,
    PhaseRun,
    phase_run,
)
from prism.bench.engine.rounds import PhaseWork, run_interleaved
from prism.bench.engine.workload import Workload
from prism.bench.machine import Machine
from prism.bench.memory import MemoryUse
from prism.bench.structured.bench import run_structured_bench
from prism.bench.structured.report import format_report as structured_report
from prism.bench.structured.report import to_json as structured_json


def test_phase_run_times_each_request_from_the_common_submission() -> None:
    # Two requests submitted at t=10: one gets tokens at 11, 12, 14; the other at 13, 14.
    run = phase_run(10.0, [[11.0, 12.0, 14.0], [13.0, 14.0]], prompt_tokens=50, cached=16)

    assert run.num_requests == 2
    assert run.output_tokens == 5
    assert run.seconds == 4.0
    assert run.tokens_per_second == 1.25
    assert (run.ttft.p50, run.ttft.p99) == (2.0, pytest.approx(2.98))
    assert run.tpot.p50 == 1.25  # the mean of 1.5 (request one) and 1.0 (request two)
    assert sorted([run.itl.p50 or 0.0]) == [1.0]  # gaps 1, 2 and 1
    assert run.cached_tokens == 16


def test_a_lone_requests_decode_rate_excludes_its_first_token() -> None:
    run = phase_run(0.0, [[0.5, 0.75, 1.0, 1.25, 1.5]], prompt_tokens=10, cached=0)

    assert run.decode_tokens_per_second == 4.0


def test_a_one_token_run_has_no_decode_rate() -> None:
    run = phase_run(0.0, [[0.5]], prompt_tokens=2000, cached=0)

    assert run.ttft.p50 == 0.5
    assert run.decode_tokens_per_second is None


def _engine(tokens_per_second: list[float], step: float, cached: int = 0) -> EngineRun:
    """Runs of 2 requests x 4 tokens whose throughput is each of ``tokens_per_second``."""

    def batch(rate: float) -> PhaseRun:
        end = 8 / rate
        times = [end - 3 * step, end - 2 * step, end - step, end]
        return phase_run(0.0, [times, times], prompt_tokens=80, cached=cached)

    def single() -> PhaseRun:
        return phase_run(0.0, [[0.1 + step * i for i in range(4)]], prompt_tokens=40, cached=0)

    prefill = phase_run(0.0, [[step * 10]], prompt_tokens=300, cached=0)
    return EngineRun(
        load_seconds=1.0,
        single=[single() for _ in tokens_per_second],
        batch=[batch(rate) for rate in tokens_per_second],
        prefill=[prefill for _ in tokens_per_second],
        memory_added_bytes=200 << 20,
    )


def _result(hf: EngineRun | None, weight_dtype: str = "float32") -> EngineBenchResult:
    machine = Machine("a CPU", 2, 2, 2, "cpu", "a CPU", "2.13.0", "5.0", "3.11")
    return EngineBenchResult(
        date="2026-12-02T08:00:00+00:00",
        machine=machine,
        model_id="tiny",
        dtype="float32",
        prism_weight_dtype=weight_dtype,
        prism_threads=2,
        hf_threads=None if hf is None else 2,
        workload=Workload(2, 4, 300),
        prompt_tokens=[40, 40],
        prism=_engine([10.0, 12.0, 11.0], step=0.1, cached=16),
        hf=hf,
    )


def test_ratios_compare_the_medians_of_both_engines() -> None:
    result = _result(_engine([5.0, 6.0, 50.0], step=0.2))

    assert result.batch_ratio == pytest.approx(11.0 / 6.0)
    assert result.single_decode_ratio == pytest.approx(2.0)
    assert result.prefill_time_ratio == pytest.approx(0.5)


def test_the_report_shows_medians_ranges_cache_hits_and_ratios() -> None:
    report = format_report(_result(_engine([5.0, 6.0, 50.0], step=0.2)))

    assert "float32 on both" in report
    assert "the median of 3 runs" in report
    assert "batch 16/80" in report
    throughput = next(line for line in report.splitlines() if "output tok/s" in line)
    assert throughput.split()[4:9] == ["11.0", "10.0-12.0", "6.0", "5.0-50.0", "1.83x"]


def test_a_mixed_precision_run_is_labelled_as_an_extra() -> None:
    report = format_report(_result(None, weight_dtype="bfloat16"))

    assert "MIXED PRECISION (an extra, not like for like)" in report
    assert "Prism/HF" in report


def test_a_quantized_run_is_labelled_and_reports_its_weight_bytes() -> None:
    hf = dataclasses.replace(_engine([5.0, 6.0, 7.0], step=0.2), weight_bytes=400 << 20)
    prism = dataclasses.replace(_engine([10.0, 12.0, 11.0], step=0.1), weight_bytes=100 << 20)
    result = dataclasses.replace(_result(hf), prism=prism, prism_quantization="int8")

    report = format_report(result)

    assert "QUANTIZED (an extra, not like for like): Prism's matrices int8" in report
    weights = next(line for line in report.splitlines() if line.startswith("weights MiB"))
    assert weights.split()[2:] == ["100.0", "400.0", "0.25x"]
    assert to_json(result)["ratio_prism_over_hf"]["weight_bytes"] == pytest.approx(0.25)


def test_the_json_record_keeps_every_run_and_the_summary() -> None:
    record = json.loads(json.dumps(to_json(_result(_engine([5.0, 6.0, 7.0], step=0.2)))))

    assert record["rounds"] == 3
    assert record["threads"] == {"prism": 2, "hf": 2}
    assert len(record["prism"]["batch"]) == 3
    assert record["prism"]["batch"][0]["cached_tokens"] == 16
    assert record["hf"]["summary"]["2 requests: output tok/s"]["median"] == pytest.approx(6.0)
    assert record["ratio_prism_over_hf"]["prefill_seconds"] == pytest.approx(0.5)


class _Recorder:
    """A contender that records what it was asked to run, in order, into a shared log."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.load_seconds = 0.5
        self.weight_bytes = 1 << 20

    def warm_up(self) -> None:
        self.log.append(f"{self.name} warm-up")

    def run(self, prompts: list[list[int]], new_tokens: int) -> PhaseRun:
        self.log.append(f"{self.name} {len(prompts)}x{new_tokens}")
        times = [[1.0 + step for step in range(new_tokens)] for _ in prompts]
        return phase_run(0.0, times, sum(len(prompt) for prompt in prompts), 0)


def test_rounds_run_each_phase_on_both_engines_in_turn_swapping_the_order() -> None:
    log: list[str] = []
    phases = [PhaseWork("single", [[1, 2]], 3), PhaseWork("batch", [[1], [2]], 3)]
    phases.append(PhaseWork("prefill", [[1] * 9], 1))
    load = MemoryUse(100 << 20, 150 << 20)
    first, second = _Recorder("prism", log), _Recorder("hf", log)

    runs = run_interleaved(
        [(first, load), (second, load)], phases, 2, torch.device("cpu"), lambda _: None
    )

    assert log == [
        "prism warm-up", "hf warm-up",
        "prism 1x3", "hf 1x3", "prism 2x3", "hf 2x3", "prism 1x1", "hf 1x1",
        "hf 1x3", "prism 1x3", "hf 2x3", "prism 2x3", "hf 1x1", "prism 1x1",
    ]  # fmt: skip
    for run in runs:
        assert [len(run.single), len(run.batch), len(run.prefill)] == [2, 2, 2]
        assert run.load_seconds == 0.5
        # The load's 50 MiB, plus whatever the largest run added (on Linux, measured).
        assert run.memory_added_bytes is None or run.memory_added_bytes >= 50 << 20


def test_the_structured_bench_times_free_and_constrained_runs_alike(
    tiny_chat_model: Path,
) -> None:
    result = run_structured_bench(
        Workload(num_requests=2, output_tokens=4, prefill_tokens=16),
        source=str(tiny_chat_model),
        device="cpu",
        dtype="float32",
        threads=1,
        repeats=2,
    )

    assert len(result.free) == len(result.constrained) == 2
    assert all(run.output_tokens == 8 for run in result.free + result.constrained)
    assert result.compile.first_seconds > 0 and len(result.compile.new_schema_seconds) == 5
    report = structured_report(result)
    assert "JSON schema" in report and "cost:" in report and "grammar compile" in report
    assert structured_json(result)["constrained"][0]["output_tokens"] == 8
