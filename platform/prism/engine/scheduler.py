"""Continuous batching: which requests run in the next step, and how many tokens each.

One token budget per step is shared by decodes and (chunked) prefills. Running requests
go first, in arrival order; when blocks run out the newest running request is preempted
(its blocks freed, to be recomputed later). No new request is admitted in a step that
preempted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from prism.engine.engine_config import EngineConfig
from prism.engine.kv_cache_manager import KVCacheManager
from prism.engine.request import Request, RequestStatus
from prism.outputs import FinishReason


@dataclass(slots=True)
class ScheduledChunk:
    """``num_tokens`` tokens of ``request`` to compute, starting at ``start``."""

    request: Request
    start: int
    num_tokens: int

    @property
    def samples(self) -> bool:
        """Whether this chunk reaches the end of the sequence, so a token is sampled."""
        return self.start + self.num_tokens == self.request.num_tokens


@dataclass(slots=True)
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(chunk.num_tokens for chunk in self.chunks)


@dataclass(slots=True)
class PrefixCacheCounters:
    """Cumulative prefix-cache lookups, in tokens."""

    queries: int = 0
    hits: int = 0


class Scheduler:
    def __init__(self, config: EngineConfig, kv: KVCacheManager) -> None:
        self.config = config
        self.kv = kv
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.prefix_cache = PrefixCacheCounters()
        self.num_preemptions = 0

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput()
        budget = self._schedule_running(self.config.max_num_batched_tokens, output)
        if not output.preempted:
            self._schedule_waiting(budget, output)
        return output

    def _schedule_running(self, budget: int, output: SchedulerOutput) -> int:
        index = 0
        while index < len(self.running) and budget > 0:
            request = self.running[index]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            if not self._allocate_or_preempt(request, num_new, output):
                break
            output.chunks.append(ScheduledChunk(request, request.num_computed_tokens, num_new))
            budget -= num_new
            index += 1
        return budget

    def _allocate_or_preempt(self, request: Request, num_new: int, output: SchedulerOutput) -> bool:
        while not self.kv.allocate(request, num_new):
            victim = self.running.pop()
            self._preempt(victim)
            output.preempted.append(victim)
            if victim is request:
                return False
        return True

    def _schedule_waiting(self, budget: int, output: SchedulerOutput) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            hit = self.kv.cached_prefix(request)
            num_cached = hit.num_blocks * self.kv.block_size
            num_new = min(request.num_tokens - num_cached, budget)
            if not self.kv.allocate(request, num_new, hit):
                break
            self.waiting.popleft()
            self.running.append(request)
            request.status = RequestStatus.RUNNING
            self.prefix_cache.queries += request.num_tokens
            self.prefix_cache.hits += num_cached
            if request.num_cached_tokens is None:
                request.num_cached_tokens = num_cached
            output.chunks.append(ScheduledChunk(request, num_cached, num_new))
            budget -= num_new

    def _preempt(self, request: Request) -> None:
        self.kv.free(request)
        request.num_computed_tokens = 0
        request.status = RequestStatus.PREEMPTED
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def pending_prefill_tokens(self) -> int:
        """Tokens still to prefill: waiting requests past their cached prefix, plus the rest
        of running requests' chunked prefills (a decode step's one token does not count)."""
        pending = 0
        for request in self.waiting:
            cached = self.kv.cached_prefix(request).num_blocks * self.kv.block_size
            pending += request.num_tokens - cached
        for request in self.running:
            remaining = request.num_tokens - request.num_computed_tokens
            if remaining > 1 or not request.output_token_ids:
                pending += remaining
        return pending

    def commit(self, output: SchedulerOutput) -> None:
        """Record that the step computed its chunks; cache the blocks they filled and
        release those their requests' next tokens no longer attend to."""
        for chunk in output.chunks:
            chunk.request.num_computed_tokens = chunk.start + chunk.num_tokens
            self.kv.register_computed(chunk.request)
            self.kv.release_outside_window(chunk.request)

    def finish(self, request: Request, reason: FinishReason) -> None:
        """Take a request out of the queues and release its blocks."""
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        self.kv.free(request)
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
