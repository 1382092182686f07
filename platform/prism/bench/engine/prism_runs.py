"""Prism's engine as a benchmark contender: every run on one ``LLMEngine``, its cache emptied.

The prefix cache is emptied before every timed run, so no run reuses KV that an earlier run
computed; hits within a run (requests sharing the chat template's system prompt) remain and
are counted in each run's ``cached_tokens``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import torch
from transformers import PreTrainedTokenizerBase

from prism.bench.engine.results import PhaseRun, phase_run
from prism.bench.prompts import WARMUP_TOKENS
from prism.engine import EngineConfig, LLMEngine, SamplingParams
from prism.models import ResolvedModel


class PrismContender:
    """Loads Prism's engine on entry and times runs on it; closes it on exit."""

    def __init__(
        self,
        model: ResolvedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: EngineConfig,
        params: SamplingParams,
        warmup: list[int],
        threads: int,
    ) -> None:
        """``threads``: this process's torch threads while Prism runs (rank 0's share)."""
        self._model = model
        self._tokenizer = tokenizer
        self._config = config
        self._params = params
        self._warmup = warmup
        self._threads = threads
        self._labels = itertools.count()
        self._engine: LLMEngine | None = None
        self.load_seconds = 0.0
        self.weight_bytes: int | None = None

    def __enter__(self) -> PrismContender:
        started = time.perf_counter()
        self._engine = LLMEngine(
            self._model.model_id, self._model.path, self._config, self._tokenizer
        )
        self.load_seconds = time.perf_counter() - started
        self.weight_bytes = self._engine.runner.weight_bytes()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def warm_up(self) -> None:
        self.run([self._warmup], WARMUP_TOKENS)

    @property
    def engine(self) -> LLMEngine:
        if self._engine is None:
            raise RuntimeError("the Prism contender is not loaded")
        return self._engine

    def run(
        self, prompts: list[list[int]], new_tokens: int, params: SamplingParams | None = None
    ) -> PhaseRun:
        """Empty the prefix cache, submit every prompt at once and step until all finish.

        ``params`` replaces the contender's sampling settings for this run (``max_tokens``
        is always ``new_tokens``).
        """
        engine = self.engine
        torch.set_num_threads(self._threads)
        engine.reset_prefix_cache()
        params = replace(params or self._params, max_tokens=new_tokens)
        token_times: dict[str, list[float]] = {}
        cached: dict[str, int] = {}
        submitted = time.perf_counter()
        for prompt in prompts:
            engine.add_request(f"bench-{next(self._labels)}", prompt, params)
        while engine.has_unfinished_requests():
            outputs = engine.step()
            now = time.perf_counter()
            for output in outputs:
                times = token_times.setdefault(output.request_id, [])
                times.extend(now for _ in output.new_token_ids)
                cached[output.request_id] = output.num_cached_tokens
        return phase_run(
            submitted,
            list(token_times.values()),
            sum(len(prompt) for prompt in prompts),
            sum(cached.values()),
        )
