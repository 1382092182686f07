"""The asyncio front: streaming, client departure, errors and shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from prism.engine import AsyncEngine, FinishReason, LLMEngine, RequestOutput, SamplingParams
from prism.engine import async_engine as async_engine_module
from prism.errors import EngineDead, InvalidRequest, StepFailed
from prism.hashing import cache_namespace, extend_block_hashes, root_hash
from prism.kv_events import BlocksStored, KVEventsDropped
from support.engines import engine_config
from support.models import ReferenceModel, random_prompts

BLOCK_SIZE = 4
NUM_BLOCKS = 96
LONG = SamplingParams(max_tokens=340, ignore_eos=True)
"""Runs long unless aborted: 30 prompt tokens plus these fill most of the 384-token context."""


@pytest.fixture
def make_engine(tiny_llama: ReferenceModel) -> Iterator[Callable[..., AsyncEngine]]:
    """Builds async engines over the tiny model (settings overridden by keyword); shuts them
    down after the test."""
    fronts: list[AsyncEngine] = []

    def make(**overrides: object) -> AsyncEngine:
        config = engine_config(block_size=BLOCK_SIZE, num_kv_blocks=NUM_BLOCKS, **overrides)
        fronts.append(AsyncEngine(LLMEngine(tiny_llama.model_id, tiny_llama.path, config)))
        return fronts[-1]

    yield make
    for front in fronts:
        front.shutdown()


@pytest.fixture
def async_engine(make_engine: Callable[..., AsyncEngine]) -> AsyncEngine:
    return make_engine()


async def collect(front: AsyncEngine, prompt: list[int], params: SamplingParams) -> list[int]:
    return [
        token async for output in front.generate(prompt, params) for token in output.new_token_ids
    ]


def reference_tokens(
    model: ReferenceModel, prompts: list[list[int]], params: SamplingParams
) -> list[list[int]]:
    """Each prompt's tokens from the synchronous engine, one request at a time."""
    expected = []
    with LLMEngine(model.model_id, model.path, engine_config(num_kv_blocks=64)) as reference:
        for index, prompt in enumerate(prompts):
            reference.add_request(str(index), prompt, params)
            tokens = []
            while reference.has_unfinished_requests():
                tokens.extend(t for o in reference.step() for t in o.new_token_ids)
            expected.append(tokens)
    return expected


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def is_idle(front: AsyncEngine) -> bool:
    stats = front.stats()
    idle = stats.num_running == stats.num_waiting == 0
    return idle and stats.num_free_kv_blocks == stats.num_kv_blocks


def assert_stopped_early(front: AsyncEngine, prompt_len: int) -> None:
    """The engine dropped a request it was running for ``LONG``: idle, every block free
    within 2 s, and the prefix cache (the blocks it computed) far short of ``max_tokens``."""
    wait_for(lambda: is_idle(front), timeout=2.0)
    computed = len(asyncio.run(front.cached_block_hashes())) * BLOCK_SIZE
    assert computed < prompt_len + 40


def test_concurrent_streams_match_the_sync_engine(
    async_engine: AsyncEngine, tiny_llama: ReferenceModel
) -> None:
    prompts = random_prompts([4, 11, 19, 26])
    params = SamplingParams(max_tokens=10, temperature=0.0)
    expected = reference_tokens(tiny_llama, prompts, params)

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(collect(async_engine, p, params) for p in prompts))

    assert asyncio.run(main()) == expected
    assert async_engine.stats().num_free_kv_blocks == NUM_BLOCKS
    stored = [e for e in async_engine.drain_events() if isinstance(e, BlocksStored)]
    assert stored and async_engine.drain_events() == []


def test_leaving_a_stream_early_aborts_and_frees_blocks(async_engine: AsyncEngine) -> None:
    async def main() -> None:
        stream = async_engine.generate(random_prompts([30])[0], LONG)
        async for output in stream:
            if output.num_output_tokens >= 3:
                break
        await stream.aclose()

    asyncio.run(main())
    assert_stopped_early(async_engine, 30)


def test_cancelled_task_aborts_its_request(async_engine: AsyncEngine) -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in async_engine.generate(random_prompts([30])[0], LONG):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert_stopped_early(async_engine, 30)


def test_abort_ends_its_stream_with_finish_reason_abort(async_engine: AsyncEngine) -> None:
    async def main() -> list[RequestOutput]:
        outputs = []
        async for output in async_engine.generate(random_prompts([30])[0], LONG, "doomed"):
            outputs.append(output)
            if len(outputs) == 3:
                async_engine.abort("doomed")
        return outputs

    outputs = asyncio.run(main())
    assert outputs[-1].finished and outputs[-1].finish_reason is FinishReason.ABORT
    assert outputs[-1].num_output_tokens < 40
    assert_stopped_early(async_engine, 30)


def test_invalid_request_raises_before_streaming(async_engine: AsyncEngine) -> None:
    async def main() -> None:
        with pytest.raises(InvalidRequest):
            await collect(async_engine, [], SamplingParams())

    asyncio.run(main())
    assert async_engine.healthy


def test_shutdown_ends_streams_in_flight_with_engine_dead(async_engine: AsyncEngine) -> None:
    async def main() -> None:
        stream = async_engine.generate([1, 2, 3], SamplingParams(max_tokens=300))
        await anext(stream)
        async_engine.shutdown()
        with pytest.raises(EngineDead):
            async for _ in stream:
                pass

    asyncio.run(main())
    assert not async_engine.healthy
    with pytest.raises(EngineDead):
        async_engine.check_health()


def test_snapshot_of_cached_hashes_matches_the_stored_events(
    async_engine: AsyncEngine, tiny_llama: ReferenceModel
) -> None:
    prompt = random_prompts([21], seed=5)[0]
    params = SamplingParams(max_tokens=3, temperature=0.0)

    async def main() -> tuple[list[int], set[bytes], list[bytes]]:
        tokens = await collect(async_engine, prompt, params)
        published = {
            block
            for event in async_engine.drain_events()
            if isinstance(event, BlocksStored)
            for block in event.block_hashes
        }
        return tokens, published, await async_engine.cached_block_hashes()

    tokens, published, snapshot = asyncio.run(main())

    computed = (prompt + tokens)[:-1]  # the last sampled token is never run through the model
    expected: list[bytes] = []
    extend_block_hashes(
        expected, computed, BLOCK_SIZE, root_hash(cache_namespace(tiny_llama.model_id))
    )
    assert len(expected) == (21 + 3 - 1) // BLOCK_SIZE
    assert published == set(snapshot) == set(expected)
    assert async_engine.drain_events() == []  # the snapshot replaces the events before it


def test_undrained_events_are_bounded(
    async_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(async_engine_module, "MAX_PENDING_EVENTS", 2)
    params = SamplingParams(max_tokens=2, temperature=0.0)

    async def main() -> None:
        for prompt in random_prompts([9, 13, 17, 21, 25], seed=6):
            await collect(async_engine, prompt, params)

    asyncio.run(main())

    events = async_engine.drain_events()
    assert len(events) <= 3
    assert KVEventsDropped() in events


def test_a_failed_step_ends_only_its_requests(
    make_engine: Callable[..., AsyncEngine], tiny_llama: ReferenceModel
) -> None:
    front = make_engine(max_num_seqs=1, fault_injection=True)
    doomed_prompt, waiting_prompt = random_prompts([9, 14], seed=3)
    params = SamplingParams(max_tokens=8, temperature=0.0)

    async def main() -> list[int]:
        doomed = front.generate(doomed_prompt, LONG)
        await anext(doomed)
        waiting = asyncio.create_task(collect(front, waiting_prompt, params))
        while front.stats().num_waiting == 0:  # queued behind the doomed request
            await asyncio.sleep(0.01)
        front.inject_step_fault()
        with pytest.raises(StepFailed, match="injected step fault"):
            async for _ in doomed:
                pass
        return await waiting

    assert asyncio.run(main()) == reference_tokens(tiny_llama, [waiting_prompt], params)[0]
    front.check_health()
    wait_for(lambda: is_idle(front), timeout=2.0)
    again = asyncio.run(collect(front, doomed_prompt, params))
    assert again == reference_tokens(tiny_llama, [doomed_prompt], params)[0]


def test_steps_failing_in_a_row_make_the_engine_dead(
    make_engine: Callable[..., AsyncEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(async_engine_module, "MAX_CONSECUTIVE_FAILED_STEPS", 2)
    front = make_engine(fault_injection=True)
    params = SamplingParams(max_tokens=2)

    async def fail(error: type[Exception]) -> None:
        front.inject_step_fault()
        with pytest.raises(error):
            await collect(front, [1, 2, 3], params)

    async def main() -> None:
        await fail(StepFailed)
        await collect(front, [1, 2, 3], params)  # a step that succeeds starts the count anew
        await fail(StepFailed)
        await fail(EngineDead)

    asyncio.run(main())
    assert not front.healthy
    with pytest.raises(EngineDead, match="2 engine steps failed in a row"):
        front.check_health()


def test_a_fault_is_refused_unless_the_setting_allows(async_engine: AsyncEngine) -> None:
    with pytest.raises(InvalidRequest, match="fault_injection"):
        async_engine.inject_step_fault()
