"""Measure Prism's engine on a workload: a warm-up, one request alone, then the whole batch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from statistics import fmean

from transformers import PreTrainedTokenizerBase

from prism.bench.engine.results import BatchRun, EngineRun, SingleRun
from prism.bench.memory import PeakMemory
from prism.bench.prompts import WARMUP_TOKENS
from prism.engine import EngineConfig, LLMEngine, SamplingParams
from prism.engine.model_runner import resolve_device
from prism.models import ResolvedModel


@dataclass(slots=True)
class _Timeline:
    """When a group of requests was submitted, got their first tokens and all finished."""

    submitted: float
    first_tokens: dict[str, float] = field(default_factory=dict)
    finished: float = 0.0
    output_tokens: int = 0


def _drive(
    engine: LLMEngine, label: str, prompts: list[list[int]], params: SamplingParams
) -> _Timeline:
    """Submit every prompt at once and step the engine until all of them finish."""
    timeline = _Timeline(time.perf_counter())
    for index, prompt in enumerate(prompts):
        engine.add_request(f"{label}-{index}", prompt, params)
    while engine.has_unfinished_requests():
        outputs = engine.step()
        now = time.perf_counter()
        for output in outputs:
            timeline.first_tokens.setdefault(output.request_id, now)
            timeline.output_tokens += len(output.new_token_ids)
    timeline.finished = time.perf_counter()
    return timeline


def measure_prism(
    model: ResolvedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: EngineConfig,
    prompts: list[list[int]],
    warmup: list[int],
    params: SamplingParams,
    long_prompt: list[int],
) -> EngineRun:
    """Load the engine, warm it up, then time the single run and the batch run.

    The single run (prompt 0) goes first so its time to first token is a cold prefill; the
    batch run may then reuse the cached KV of the prompt prefix all requests share.
    """
    with PeakMemory(resolve_device(config.device)) as memory:
        started = time.perf_counter()
        with LLMEngine(model.model_id, model.path, config, tokenizer) as engine:
            load_seconds = time.perf_counter() - started
            _drive(engine, "warmup", [warmup], replace(params, max_tokens=WARMUP_TOKENS))
            single = _drive(engine, "single", prompts[:1], params)
            batch = _drive(engine, "batch", prompts, params)
            prefill = _drive(engine, "prefill", [long_prompt], replace(params, max_tokens=1))
    first_token = min(single.first_tokens.values())
    return EngineRun(
        load_seconds=load_seconds,
        batch=BatchRun(
            num_requests=len(prompts),
            output_tokens=batch.output_tokens,
            seconds=batch.finished - batch.submitted,
            ttft_mean_seconds=fmean(t - batch.submitted for t in batch.first_tokens.values()),
        ),
        single=SingleRun(
            output_tokens=single.output_tokens,
            ttft_seconds=first_token - single.submitted,
            decode_seconds=single.finished - first_token,
        ),
        prefill_seconds=prefill.finished - prefill.submitted,
        memory=memory.use,
    )
