"""Benchmarks of Prism: standard workloads, measurements and their reports."""

from __future__ import annotations

from prism.bench.engine_bench import run_engine_bench
from prism.bench.records import default_json_path
from prism.bench.report import format_report, write_json
from prism.bench.results import EngineBenchResult
from prism.bench.workloads import Workload

__all__ = [
    "EngineBenchResult",
    "Workload",
    "default_json_path",
    "format_report",
    "run_engine_bench",
    "write_json",
]
