"""Continuous batching without a model: token budget, chunked prefill, admission, preemption."""

from __future__ import annotations

from prism.engine.kv_cache_manager import KVCacheManager
from prism.engine.request import Request, RequestStatus
from prism.engine.scheduler import Scheduler
from prism.outputs import FinishReason
from support.engine_requests import BLOCK_SIZE, engine_request
from support.engines import engine_config

SAMPLED_TOKEN = 7
Chunk = tuple[str, int, int]
"""A scheduled chunk as (request id, first token, number of tokens)."""


def make_scheduler(num_blocks: int, **overrides: object) -> Scheduler:
    config = engine_config(block_size=BLOCK_SIZE, **overrides)
    return Scheduler(config, KVCacheManager(num_blocks, BLOCK_SIZE, config.enable_prefix_caching))


def add(scheduler: Scheduler, request_id: str, length: int, first_token: int = 0) -> Request:
    request = engine_request(request_id, list(range(first_token, first_token + length)))
    scheduler.add(request)
    return request


def step(scheduler: Scheduler) -> tuple[list[Chunk], list[str]]:
    """One engine step: schedule, compute, and sample a token where a chunk ends a sequence."""
    output = scheduler.schedule()
    sampling = [chunk.request for chunk in output.chunks if chunk.samples]
    scheduler.commit(output)
    for request in sampling:
        request.append_token(SAMPLED_TOKEN)
    chunks = [(chunk.request.request_id, chunk.start, chunk.num_tokens) for chunk in output.chunks]
    return chunks, [request.request_id for request in output.preempted]


def test_decodes_go_first_and_a_long_prompt_is_prefilled_in_budget_sized_chunks() -> None:
    scheduler = make_scheduler(64, max_num_batched_tokens=10)
    add(scheduler, "a", 6)
    assert step(scheduler) == ([("a", 0, 6)], [])
    b = add(scheduler, "b", 20, first_token=100)

    assert step(scheduler) == ([("a", 6, 1), ("b", 0, 9)], [])
    assert step(scheduler) == ([("a", 7, 1), ("b", 9, 9)], [])
    assert b.output_token_ids == []  # a chunk that stops short of the end samples nothing
    assert step(scheduler) == ([("a", 8, 1), ("b", 18, 2)], [])
    assert b.output_token_ids == [SAMPLED_TOKEN]
    assert step(scheduler) == ([("a", 9, 1), ("b", 20, 1)], [])


def test_waiting_requests_are_admitted_up_to_max_num_seqs() -> None:
    scheduler = make_scheduler(64, max_num_seqs=2)
    a, _, c = (add(scheduler, name, 4, first_token=10 * n) for n, name in enumerate("abc"))

    assert step(scheduler) == ([("a", 0, 4), ("b", 0, 4)], [])
    assert list(scheduler.waiting) == [c] and c.status is RequestStatus.WAITING

    scheduler.finish(a, FinishReason.STOP)
    assert step(scheduler) == ([("b", 4, 1), ("c", 0, 4)], [])


def test_running_out_of_blocks_preempts_the_newest_running_request() -> None:
    scheduler = make_scheduler(4)
    a = add(scheduler, "a", 8)
    b = add(scheduler, "b", 8, first_token=100)
    assert step(scheduler) == ([("a", 0, 8), ("b", 0, 8)], [])

    assert step(scheduler) == ([("a", 8, 1)], ["b"])  # a's ninth token needs a third block
    assert scheduler.running == [a] and len(a.block_ids) == 3
    assert list(scheduler.waiting) == [b]
    assert b.status is RequestStatus.PREEMPTED
    assert (b.num_computed_tokens, b.block_ids, b.num_preemptions) == (0, [], 1)
    assert scheduler.num_preemptions == 1


def test_a_step_that_preempts_admits_nothing_new() -> None:
    scheduler = make_scheduler(3, max_num_batched_tokens=4)
    add(scheduler, "a", 4)
    add(scheduler, "b", 5, first_token=100)
    assert step(scheduler) == ([("a", 0, 4)], [])
    assert step(scheduler) == ([("a", 4, 1), ("b", 0, 3)], [])

    assert step(scheduler) == ([("a", 5, 1)], ["b"])  # b's second chunk finds no block
    assert scheduler.kv.pool.num_free >= 1, "b's first chunk would fit, yet waits a step"
    assert step(scheduler) == ([("a", 6, 1), ("b", 0, 3)], [])  # recomputed from the start


def test_a_cached_prefix_is_counted_and_not_computed_again() -> None:
    scheduler = make_scheduler(64)
    a = add(scheduler, "a", 10)
    step(scheduler)
    scheduler.finish(a, FinishReason.STOP)

    b = engine_request("b", [*a.prompt_token_ids[:8], 200, 201, 202, 203, 204])
    scheduler.add(b)
    assert step(scheduler) == ([("b", 8, 5)], [])  # two full blocks of a are reused
    assert b.num_cached_tokens == 8
    assert (scheduler.prefix_cache.queries, scheduler.prefix_cache.hits) == (10 + 13, 8)


def test_finishing_a_request_frees_its_blocks_whether_running_or_waiting() -> None:
    scheduler = make_scheduler(8, max_num_seqs=1)
    a = add(scheduler, "a", 9)
    b = add(scheduler, "b", 4, first_token=100)
    step(scheduler)
    assert scheduler.kv.pool.num_free == 5

    scheduler.finish(a, FinishReason.LENGTH)
    scheduler.finish(b, FinishReason.ABORT)

    assert not scheduler.has_unfinished()
    assert scheduler.kv.pool.num_free == 8 and a.block_ids == []
    assert (a.status, a.finish_reason) == (RequestStatus.FINISHED, FinishReason.LENGTH)
    assert (b.status, b.finish_reason) == (RequestStatus.FINISHED, FinishReason.ABORT)
