"""Measure Prism's engine on a workload: a warm-up, then repeated single, batch and prefill runs.

The prefix cache is emptied before every timed run, so no run reuses KV that an earlier run
computed; hits within a run (requests sharing the chat template's system prompt) remain and
are counted in each run's ``cached_tokens``.
"""

from __future__ import annotations

import time
from dataclasses import replace

from transformers import PreTrainedTokenizerBase

from prism.bench.engine.results import EngineRun, PhaseRun, phase_run
from prism.bench.memory import PeakMemory
from prism.bench.prompts import WARMUP_TOKENS
from prism.engine import EngineConfig, LLMEngine, SamplingParams
from prism.engine.model_runner import resolve_device
from prism.models import ResolvedModel


def _run(
    engine: LLMEngine, label: str, prompts: list[list[int]], params: SamplingParams
) -> PhaseRun:
    """Empty the prefix cache, submit every prompt at once and step until all finish."""
    engine.reset_prefix_cache()
    token_times: dict[str, list[float]] = {}
    cached: dict[str, int] = {}
    submitted = time.perf_counter()
    for index, prompt in enumerate(prompts):
        engine.add_request(f"{label}-{index}", prompt, params)
    while engine.has_unfinished_requests():
        outputs = engine.step()
        now = time.perf_counter()
        for output in outputs:
            token_times.setdefault(output.request_id, []).extend(now for _ in output.new_token_ids)
            cached[output.request_id] = output.num_cached_tokens
    return phase_run(
        submitted,
        list(token_times.values()),
        sum(len(prompt) for prompt in prompts),
        sum(cached.values()),
    )


def measure_prism(
    model: ResolvedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: EngineConfig,
    prompts: list[list[int]],
    warmup: list[int],
    params: SamplingParams,
    long_prompt: list[int],
    repeats: int,
) -> EngineRun:
    """Load the engine, warm it up, then time ``repeats`` rounds of single, batch and prefill."""
    single, batch, prefill = [], [], []
    with PeakMemory(resolve_device(config.device)) as memory:
        started = time.perf_counter()
        with LLMEngine(model.model_id, model.path, config, tokenizer) as engine:
            load_seconds = time.perf_counter() - started
            _run(engine, "warmup", [warmup], replace(params, max_tokens=WARMUP_TOKENS))
            for round_ in range(repeats):
                single.append(_run(engine, f"single{round_}", prompts[:1], params))
                batch.append(_run(engine, f"batch{round_}", prompts, params))
                prefill.append(
                    _run(engine, f"prefill{round_}", [long_prompt], replace(params, max_tokens=1))
                )
    return EngineRun(load_seconds, single, batch, prefill, memory.use)
