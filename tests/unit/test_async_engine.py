"""The asyncio front: streaming, client departure, errors and shutdown."""

from __future__ import annotations

import asyncio
import time

import pytest

from prism.engine import AsyncEngine, LLMEngine, SamplingParams
from prism.engine import async_engine as async_engine_module
from prism.errors import EngineDead, InvalidRequest
from prism.kv_events import BlocksStored, KVEventsDropped
from support.engines import engine_config
from support.models import ReferenceModel, random_prompts


@pytest.fixture
def async_engine(tiny_llama: ReferenceModel):
    engine = LLMEngine(
        tiny_llama.model_id, tiny_llama.path, engine_config(block_size=4, num_kv_blocks=96)
    )
    front = AsyncEngine(engine)
    yield front
    front.shutdown()


async def collect(front: AsyncEngine, prompt: list[int], params: SamplingParams) -> list[int]:
    return [
        token async for output in front.generate(prompt, params) for token in output.new_token_ids
    ]


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_concurrent_streams_match_the_sync_engine(
    async_engine: AsyncEngine, tiny_llama: ReferenceModel
) -> None:
    prompts = random_prompts([4, 11, 19, 26])
    params = SamplingParams(max_tokens=10, temperature=0.0)
    reference = LLMEngine(tiny_llama.model_id, tiny_llama.path, engine_config(num_kv_blocks=64))
    expected = []
    for index, prompt in enumerate(prompts):
        reference.add_request(str(index), prompt, params)
        tokens = []
        while reference.has_unfinished_requests():
            tokens.extend(t for o in reference.step() for t in o.new_token_ids)
        expected.append(tokens)

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(collect(async_engine, p, params) for p in prompts))

    assert asyncio.run(main()) == expected
    assert async_engine.stats().num_free_kv_blocks == 96
    stored = [e for e in async_engine.drain_events() if isinstance(e, BlocksStored)]
    assert stored and async_engine.drain_events() == []


def test_leaving_a_stream_early_aborts_and_frees_blocks(async_engine: AsyncEngine) -> None:
    async def main() -> None:
        stream = async_engine.generate(random_prompts([30])[0], SamplingParams(max_tokens=300))
        async for output in stream:
            if output.num_output_tokens >= 3:
                break
        await stream.aclose()

    asyncio.run(main())
    wait_for(lambda: async_engine.stats().num_running == 0)
    assert async_engine.stats().num_free_kv_blocks == 96


def test_cancelled_task_aborts_its_request(async_engine: AsyncEngine) -> None:
    async def main() -> None:
        params = SamplingParams(max_tokens=300, ignore_eos=True)
        task = asyncio.create_task(collect(async_engine, random_prompts([9])[0], params))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_for(lambda: async_engine.stats().num_running == 0)
    assert async_engine.stats().num_free_kv_blocks == 96


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


def test_snapshot_of_cached_hashes_matches_the_stored_events(async_engine: AsyncEngine) -> None:
    params = SamplingParams(max_tokens=3, temperature=0.0)

    async def main() -> list[bytes]:
        await collect(async_engine, random_prompts([21], seed=5)[0], params)
        return await async_engine.cached_block_hashes()

    published = {
        block
        for event in async_engine.drain_events()
        if isinstance(event, BlocksStored)
        for block in event.block_hashes
    }
    snapshot = asyncio.run(main())

    assert len(snapshot) == (21 + 3 - 1) // 4
    assert published <= set(snapshot)
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
