"""What constrained decoding costs: one engine, the same batch free and under a JSON schema.

Both kinds of run share the loaded engine, the prompts, greedy decoding and the token count
(the schema's output is longer than any run, so no request ends early); they alternate round
by round, the order swapped every round, so drift lands on both. Grammar compilation is
timed apart: the first compile (which also sets up the tokenizer's token tables), a schema
not seen before, and one served from the cache.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from prism.bench.engine.bench import bench_engine_config
from prism.bench.engine.prism_runs import PrismContender
from prism.bench.engine.results import PhaseRun
from prism.bench.engine.workload import Workload
from prism.bench.machine import Machine, describe_machine, use_threads
from prism.engine.grammar import GrammarCompiler
from prism.engine.model_runner import resolve_device, resolve_dtype
from prism.models import load_tokenizer, resolve_model
from prism.structured_output import StructuredOutput

logger = logging.getLogger(__name__)

RECORD: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "city": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["new", "vip", "late"]}, "maxItems": 3},
    },
    "required": ["name", "city", "age", "tags"],
    "additionalProperties": False,
}
BENCH_SCHEMA: dict[str, Any] = {"type": "array", "items": RECORD, "minItems": 512}
"""What the constrained runs generate: at least 512 records, so thousands of tokens."""
COMPILE_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"}}},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date"}}},
    {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 8},
    {"type": "object", "properties": {"price": {"type": "number", "minimum": 0}}},
    RECORD,
]
"""Schemas compiled once each on a warm compiler for the "new schema" figure."""


@dataclass(frozen=True, slots=True)
class CompileTimes:
    """Seconds to compile: the first grammar, each new schema after it, a cached one."""

    first_seconds: float
    new_schema_seconds: list[float]
    cached_seconds: float


@dataclass(frozen=True, slots=True)
class StructuredBenchResult:
    date: str
    machine: Machine
    model_id: str
    dtype: str
    threads: int
    workload: Workload
    free: list[PhaseRun]
    constrained: list[PhaseRun]
    compile: CompileTimes

    @staticmethod
    def median_rate(runs: list[PhaseRun]) -> float:
        return statistics.median(run.tokens_per_second for run in runs)

    @property
    def cost(self) -> float:
        """The share of tokens/s that the constraint costs (medians; negative: none)."""
        return 1.0 - self.median_rate(self.constrained) / self.median_rate(self.free)


def time_compiles(compiler: GrammarCompiler) -> CompileTimes:
    """Compile the bench's grammars on a fresh compiler, timing each."""

    def seconds(schema: dict[str, Any]) -> float:
        started = time.perf_counter()
        compiler.matcher(StructuredOutput.json_schema(schema))
        return time.perf_counter() - started

    first = seconds(BENCH_SCHEMA)
    fresh = [seconds(schema) for schema in COMPILE_SCHEMAS]
    return CompileTimes(first, fresh, seconds(BENCH_SCHEMA))


def run_structured_bench(
    workload: Workload,
    *,
    source: str | None,
    device: str,
    dtype: str,
    threads: int | None,
    repeats: int = 3,
    progress: Callable[[str], None] = logger.info,
) -> StructuredBenchResult:
    """Time ``workload``'s batch free and under :data:`BENCH_SCHEMA`, ``repeats`` rounds."""
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    threads = use_threads(threads)
    torch_device = resolve_device(device)
    dtype_name = str(resolve_dtype(dtype, torch_device)).removeprefix("torch.")
    progress("loading the model")
    model = resolve_model(source)
    tokenizer = load_tokenizer(model.path)
    prompts = workload.prompt_token_ids(tokenizer)
    config = bench_engine_config(
        workload, device=str(torch_device), dtype=dtype_name, num_threads=threads
    )
    free_params = workload.sampling_params()
    constrained_params = replace(free_params, structured=StructuredOutput.json_schema(BENCH_SCHEMA))
    free: list[PhaseRun] = []
    constrained: list[PhaseRun] = []
    warmup = workload.warmup_token_ids(tokenizer)
    with PrismContender(model, tokenizer, config, free_params, warmup, threads) as prism:
        engine = prism.engine
        progress("timing grammar compiles")
        compile_times = time_compiles(
            GrammarCompiler(
                tokenizer, engine.model_config.vocab_size, engine.model_config.eos_token_ids
            )
        )
        prism.warm_up()
        prism.run(prompts, 2, constrained_params)  # the engine's own compiler, warmed
        for round_ in range(repeats):
            progress(f"round {round_ + 1} of {repeats}")
            kinds = [(free, None), (constrained, constrained_params)]
            for runs, params in kinds[::-1] if round_ % 2 else kinds:
                runs.append(prism.run(prompts, workload.output_tokens, params))
    return StructuredBenchResult(
        date=started,
        machine=describe_machine(torch_device),
        model_id=model.model_id,
        dtype=dtype_name,
        threads=threads,
        workload=workload,
        free=free,
        constrained=constrained,
        compile=compile_times,
    )
