"""The synchronous engine: add requests, run steps, read outputs, stats and KV events."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from prism.engine.detokenizer import OutputText
from prism.engine.engine_config import EngineConfig
from prism.engine.grammar import GrammarCompiler
from prism.engine.kv_cache_manager import KVCacheManager
from prism.engine.local_ranks import LocalRanks, RankLauncher
from prism.engine.model_runner import ModelRunner
from prism.engine.parallel import check_tensor_parallel
from prism.engine.quantization_plan import QuantizationPlan
from prism.engine.request import Request
from prism.engine.sampler import SampledToken, sample
from prism.engine.scheduler import Scheduler, SchedulerOutput
from prism.engine.step_faults import FaultInjector, is_fatal
from prism.engine_stats import EngineStats
from prism.errors import InvalidRequest, StepFailed
from prism.hashing import BlockHash, cache_namespace, root_hash
from prism.kv_events import KVEvent
from prism.model_limits import check_context, check_token_ids
from prism.models import ModelConfig, load_tokenizer, resolve_model
from prism.outputs import FinishReason, RequestOutput
from prism.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

WARMUP_PROMPT_TOKENS = 256
"""The longest prompt :meth:`LLMEngine.warm_up` runs (see there for why this size)."""


class LLMEngine:
    """Continuous batching over a paged KV cache for one model.

    Not thread-safe: one thread drives ``step``; :class:`AsyncEngine` wraps it for asyncio.
    With ``tensor_parallel_size`` > 1 this engine is rank 0: ``ranks`` starts the others
    (by default as local processes). :meth:`close` stops them.
    """

    def __init__(
        self,
        model_id: str,
        model_path: Path,
        config: EngineConfig,
        tokenizer: Any | None = None,
        ranks: RankLauncher | None = None,
    ) -> None:
        self.model_id = model_id
        self.config = config
        self.model_config = ModelConfig.from_folder(model_path)
        self.tokenizer = tokenizer
        self.quantization = QuantizationPlan.for_model(
            config.quantization, config.quantization_group_size, model_path
        )
        check_tensor_parallel(
            self.model_config,
            self.config.tensor_parallel_size,
            self.quantization.group_size(self.config.tensor_parallel_size),
        )
        self.ranks = None
        parallel = None
        if self.config.tensor_parallel_size > 1:
            self.ranks = ranks or LocalRanks()
            parallel = self.ranks.start(model_path, self.config)
        try:
            self.runner = ModelRunner(self.model_config, model_path, self.config, parallel)
        except BaseException:
            if self.ranks is not None:
                self.ranks.stop()
            raise
        self.kv = KVCacheManager(
            self.runner.num_blocks,
            self.config.block_size,
            self.config.enable_prefix_caching,
            self.model_config.bounded_window,
        )
        self.max_model_len = self._max_model_len()
        self.scheduler = Scheduler(self.config, self.kv)
        self._faults = FaultInjector(self.config.fault_injection)
        self._requests: dict[str, Request] = {}
        self._seed_source = torch.Generator().manual_seed(self.config.seed)
        self.grammars = (
            None
            if tokenizer is None
            else GrammarCompiler(
                tokenizer, self.model_config.vocab_size, self.model_config.eos_token_ids
            )
        )
        logger.info(
            "engine ready: %s on %s (%s, weights %s, %.1f MiB, %d ranks), "
            "%d KV blocks of %d tokens (%d tokens), max_model_len %d",
            model_id,
            self.runner.device,
            str(self.runner.dtype).removeprefix("torch."),
            self.quantization.describe(),
            self.runner.weight_bytes() / (1 << 20),
            self.config.tensor_parallel_size,
            self.runner.num_blocks,
            self.config.block_size,
            self.runner.num_blocks * self.config.block_size,
            self.max_model_len,
        )

    @classmethod
    def from_source(
        cls,
        source: str | None,
        config: EngineConfig,
        model_id: str | None = None,
        ranks: RankLauncher | None = None,
    ) -> LLMEngine:
        """Build an engine for a model id, HF folder or GGUF file (the default model if None).

        ``model_id`` names the model (and namespaces its block hashes); by default the
        source's own name.
        """
        model = resolve_model(source)
        tokenizer = load_tokenizer(model.path)
        return cls(model_id or model.model_id, model.path, config, tokenizer, ranks)

    def __enter__(self) -> LLMEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the other tensor-parallel ranks, if any (rank 0's thread must call this)."""
        try:
            self.runner.close()
        finally:
            if self.ranks is not None:
                self.ranks.stop()

    def check_health(self) -> None:
        """Raise :class:`~prism.errors.RankLost` if a tensor-parallel rank died."""
        if self.ranks is not None:
            self.ranks.check()

    def _max_model_len(self) -> int:
        """The configured or trained context, if one request of it fits the KV cache (a
        model whose every layer slides a window holds only the blocks of its window)."""
        model_len = self.config.max_model_len or self.model_config.max_position_embeddings
        peak = self.kv.peak_blocks(model_len, self.config.max_num_batched_tokens)
        if peak <= self.runner.num_blocks:
            return model_len
        pool_len = self.runner.num_blocks * self.config.block_size
        logger.warning(
            "KV cache holds %d tokens, less than the context of %d needs: max_model_len is %d",
            pool_len,
            model_len,
            pool_len,
        )
        return pool_len

    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise :class:`InvalidRequest` if the request can never be served as given."""
        if not prompt_token_ids:
            raise InvalidRequest("the prompt is empty", "prompt")
        vocab_size = self.model_config.vocab_size
        check_token_ids(prompt_token_ids, vocab_size)
        params.validate(vocab_size)
        if params.stop and self.tokenizer is None:
            raise InvalidRequest("stop strings need a tokenizer", "stop")
        if params.structured is not None and self.grammars is None:
            raise InvalidRequest("structured output needs a tokenizer", "structured_outputs")
        check_context(len(prompt_token_ids), params.max_tokens, self.max_model_len)

    def compile_constraint(self, params: SamplingParams) -> Any | None:
        """The grammar matcher a request with ``params`` needs (None: unconstrained).

        Thread-safe, so callers may compile off the step loop; grammars are cached.
        """
        if params.structured is None:
            return None
        if self.grammars is None:
            raise InvalidRequest("structured output needs a tokenizer", "structured_outputs")
        return self.grammars.matcher(params.structured)

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        cache_salt: str | None = None,
        matcher: Any | None = None,
    ) -> Request:
        """Validate and queue a request.

        ``matcher`` is the request's compiled constraint if the caller compiled it already
        (:meth:`compile_constraint`); otherwise it is compiled here.
        """
        if request_id in self._requests:
            raise InvalidRequest(f"request id {request_id!r} is already in use", "request_id")
        self.validate(prompt_token_ids, params)
        if matcher is None:
            matcher = self.compile_constraint(params)
        seed = params.seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=self._seed_source))
        generator = torch.Generator(device=self.runner.device).manual_seed(seed)
        text = None
        if self.tokenizer is not None:
            text = OutputText(
                self.tokenizer, prompt_token_ids, params.stop, params.skip_special_tokens
            )
        request = Request(
            request_id=request_id,
            prompt_token_ids=list(prompt_token_ids),
            params=params,
            max_tokens=params.max_tokens or self.max_model_len - len(prompt_token_ids),
            eos_token_ids=frozenset(self.model_config.eos_token_ids),
            hash_root=root_hash(cache_namespace(self.model_id, cache_salt)),
            block_size=self.config.block_size,
            arrival_time=time.monotonic(),
            generator=generator,
            text=text,
            matcher=matcher,
        )
        self._requests[request_id] = request
        self.scheduler.add(request)
        return request

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request and free its blocks; None if it is unknown or already done."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return None
        self._finish(request, FinishReason.ABORT)
        return self._output(request, [], [])

    def inject_step_fault(self) -> None:
        """Make the next step that has work fail like a real fault (any thread may call this).

        Raises :class:`InvalidRequest` unless the ``fault_injection`` setting is on.
        """
        self._faults.arm()

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    @torch.inference_mode()
    def step(self) -> list[RequestOutput]:
        """Schedule, run the model once, sample, and report what each request gained.

        When running or sampling fails, the step's requests end (``ABORT``, blocks freed,
        nothing of the step committed) and :class:`StepFailed` names them; the engine serves
        on. Faults that leave it unusable (:func:`~prism.engine.step_faults.is_fatal`) and
        failures of its own bookkeeping propagate as they are.
        """
        scheduled = self.scheduler.schedule()
        if not scheduled.chunks:
            return []
        now = time.monotonic()
        for chunk in scheduled.chunks:
            if chunk.request.first_scheduled_time is None:
                chunk.request.first_scheduled_time = now
        try:
            logits, samplers = self.runner.execute(scheduled.chunks)
            self._faults.fire()
            sampled = sample(logits, samplers)
        except Exception as error:
            if is_fatal(error):
                raise
            raise self._fail_step(scheduled, error) from error
        self.scheduler.commit(scheduled)
        return [
            self._advance(request, token) for request, token in zip(samplers, sampled, strict=True)
        ]

    def _fail_step(self, scheduled: SchedulerOutput, error: Exception) -> StepFailed:
        """End the requests of a step that failed before it was committed."""
        for chunk in scheduled.chunks:
            self._requests.pop(chunk.request.request_id, None)
            self._finish(chunk.request, FinishReason.ABORT)
        request_ids = tuple(chunk.request.request_id for chunk in scheduled.chunks)
        logger.error("a step failed; its %d requests end", len(request_ids), exc_info=error)
        return StepFailed(f"the engine step running this request failed: {error!r}", request_ids)

    def _advance(self, request: Request, sampled: SampledToken) -> RequestOutput:
        token_id = sampled.token_id
        request.append_token(token_id)
        if sampled.logprob is not None:
            request.output_logprobs.append(sampled.logprob)
        if request.first_token_time is None:
            request.first_token_time = time.monotonic()
        if request.matcher is not None and not request.matcher.consume_token(token_id):
            logger.error(
                "request %s sampled a token its grammar forbids: %s",
                request.request_id,
                request.matcher.get_error(),
            )
            self._requests.pop(request.request_id, None)
            self._finish(request, FinishReason.ABORT)
            return self._output(request, [token_id], [])
        reason, stop = self._stop_reason(request, token_id)
        if reason is not None:
            request.stop_reason = stop
            self._requests.pop(request.request_id, None)
            self._finish(request, reason)
        logprobs = [sampled.logprob] if sampled.logprob is not None else []
        return self._output(request, [token_id], logprobs)

    def _stop_reason(
        self, request: Request, token_id: int
    ) -> tuple[FinishReason | None, int | str | None]:
        params = request.params
        may_stop = len(request.output_token_ids) >= params.min_tokens
        if may_stop and not params.ignore_eos and token_id in request.eos_token_ids:
            return FinishReason.STOP, None
        if may_stop and token_id in params.stop_token_ids:
            return FinishReason.STOP, token_id
        if request.text is not None:
            stop = request.text.push(token_id, check_stop=may_stop)
            if stop is not None:
                return FinishReason.STOP, stop
        if request.matcher is not None and request.matcher.is_stopped():
            return FinishReason.STOP, None  # the grammar is complete and allows nothing more
        if len(request.output_token_ids) >= request.max_tokens:
            return FinishReason.LENGTH, None
        if request.num_tokens >= self.max_model_len:
            return FinishReason.LENGTH, None
        return None, None

    def _finish(self, request: Request, reason: FinishReason) -> None:
        self.scheduler.finish(request, reason)
        request.finish_time = time.monotonic()

    def _output(self, request: Request, new_tokens: list[int], logprobs: list) -> RequestOutput:
        finished = request.finished
        return RequestOutput(
            request_id=request.request_id,
            new_token_ids=new_tokens,
            new_text=request.text.take_delta(finished) if request.text is not None else "",
            finished=finished,
            finish_reason=request.finish_reason,
            num_prompt_tokens=request.num_prompt_tokens,
            num_output_tokens=len(request.output_token_ids),
            num_cached_tokens=request.num_cached_tokens or 0,
            logprobs=logprobs if request.params.logprobs is not None else None,
            stop_reason=request.stop_reason,
        )

    def stats(self) -> EngineStats:
        pool = self.kv.pool
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            num_kv_blocks=pool.num_blocks,
            num_free_kv_blocks=pool.num_free,
            kv_cache_usage=pool.usage,
            prefix_cache_queries=self.scheduler.prefix_cache.queries,
            prefix_cache_hits=self.scheduler.prefix_cache.hits,
            num_preemptions=self.scheduler.num_preemptions,
            num_pending_prefill_tokens=self.scheduler.pending_prefill_tokens(),
        )

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix; blocks held by running requests keep their contents.

        Later requests find no prefix hits until new blocks are computed. Subscribers get an
        ``AllBlocksCleared`` event.
        """
        self.kv.pool.clear_cache()

    def warm_up(self) -> None:
        """Run one synthetic request through the engine and leave no trace of it.

        The first forward passes pay one-time costs (kernels, thread pools and allocator
        set up on first use); a replica warms up before it reports ready so that its first
        real request does not pay them. The request is greedy, EOS ignored: a prefill of
        ``WARMUP_PROMPT_TOKENS`` ids cycling below the vocabulary size (capped by
        ``max_num_batched_tokens`` and the context), then one decode step. Measured with
        SmolLM2-135M on one CPU thread, a cold engine's first 200-token request took 0.13 s
        longer than the next ones, and none longer after this 256-token warm-up (2.4 s
        there); a 1,024-token warm-up cost four times as much and made later 800-token
        requests no faster.

        Afterwards the prefix cache is empty, its KV events are drained, its counters are
        as before, and every block is free. Call it on an idle engine, before serving.
        """
        if self.has_unfinished_requests():
            raise RuntimeError("warm_up needs an idle engine")
        output_tokens = 2
        length = min(
            WARMUP_PROMPT_TOKENS,
            self.config.max_num_batched_tokens,
            self.max_model_len - output_tokens,
        )
        vocab_size = self.model_config.vocab_size
        prompt = [index % vocab_size for index in range(length)]
        params = SamplingParams(
            max_tokens=output_tokens, temperature=0.0, ignore_eos=True, seed=self.config.seed
        )
        counters = replace(self.scheduler.prefix_cache)
        self.add_request("prism-warm-up", prompt, params)
        while self.has_unfinished_requests():
            self.step()
        self.reset_prefix_cache()
        self.drain_events()
        self.scheduler.prefix_cache = counters

    def drain_events(self) -> list[KVEvent]:
        """KV events (blocks stored, removed, cache cleared) since the last drain."""
        return self.kv.pool.drain_events()

    def cached_block_hashes(self) -> list[BlockHash]:
        """Every block hash the prefix cache holds now (the state the events lead to)."""
        return self.kv.pool.cached_hashes()
