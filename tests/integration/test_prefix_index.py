"""The Redis prefix index on a real Redis server: the Lua scripts, the publisher, fail-open."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis

from prism.config import RedisSettings
from prism.engine import AsyncEngine, LLMEngine, SamplingParams
from prism.redis_server import EmbeddedRedis, free_port
from prism.routing.index import NOT_LIVE, PrefixIndex
from prism.routing.keys import IndexKeys
from prism.routing.link import IndexLink
from prism.routing.publisher import EngineFeed, KVEventPublisher
from support.engines import engine_config
from support.models import ReferenceModel, random_prompts

HASHES = [bytes([n]) * 16 for n in range(8)]


@pytest.fixture
def keys() -> IndexKeys:
    return IndexKeys(f"test-{uuid.uuid4().hex[:8]}", "model-a")


def run(redis_server: EmbeddedRedis, scenario) -> object:
    async def main() -> object:
        async with Redis.from_url(redis_server.url) as redis:
            return await scenario(redis)

    return asyncio.run(main())


async def make_live(redis: Redis, keys: IndexKeys, replica_id: str, ttl_s: float = 30) -> None:
    await redis.zadd(keys.live, {replica_id: time.time() + ttl_s})


def test_leading_runs_count_held_and_predicted_blocks_of_live_replicas(
    redis_server: EmbeddedRedis, keys: IndexKeys
) -> None:
    async def scenario(redis: Redis) -> dict[str, int]:
        index = PrefixIndex(redis, keys)
        for replica in ("gap", "predicted", "expired"):
            await make_live(redis, keys, replica)
        await redis.sadd(keys.blocks("gap"), HASHES[0], HASHES[1], HASHES[3])
        await redis.sadd(keys.blocks("predicted"), HASHES[0])
        await index.predict("predicted", HASHES[1:3], ttl_s=30)
        await index.predict("expired", HASHES[:4], ttl_s=0.05)
        await redis.sadd(keys.blocks("dead"), *HASHES)
        await asyncio.sleep(0.1)
        return await index.leading_blocks(["gap", "predicted", "expired", "dead"], HASHES)

    runs = run(redis_server, scenario)

    assert runs == {"gap": 2, "predicted": 3, "expired": 0, "dead": NOT_LIVE}


def test_runs_longer_than_one_script_chunk(redis_server: EmbeddedRedis, keys: IndexKeys) -> None:
    many = [n.to_bytes(16, "little") for n in range(1500)]

    async def scenario(redis: Redis) -> dict[str, int]:
        await make_live(redis, keys, "r")
        await redis.sadd(keys.blocks("r"), *many[:1300])
        return await PrefixIndex(redis, keys).leading_blocks(["r"], many)

    assert run(redis_server, scenario) == {"r": 1300}


def test_publisher_mirrors_the_engine_and_resyncs_after_a_flush(
    redis_server: EmbeddedRedis, keys: IndexKeys, tiny_llama: ReferenceModel
) -> None:
    engine = LLMEngine(
        tiny_llama.model_id, tiny_llama.path, engine_config(block_size=4, num_kv_blocks=24)
    )
    front = AsyncEngine(engine)
    feed = EngineFeed(front.drain_events, front.cached_block_hashes)
    params = SamplingParams(max_tokens=2, temperature=0.0)

    async def generate(prompt: list[int]) -> None:
        async for _ in front.generate(prompt, params):
            pass

    async def scenario(redis: Redis) -> list[tuple[set[bytes], set[bytes]]]:
        publisher = KVEventPublisher(redis, keys, "r1", feed, liveness_ttl_s=5, interval_s=0.01)
        views = []
        await publisher.sync_all()
        for prompt in random_prompts([30, 30, 30, 30], seed=9):  # the last ones evict
            await generate(prompt)
            await publisher.publish_changes()
            views.append((await redis.smembers(keys.blocks("r1")), await cached()))
        await redis.flushdb()
        await publisher.heartbeat()  # finds its entry gone and publishes everything again
        views.append((await redis.smembers(keys.blocks("r1")), await cached()))
        assert publisher.full_syncs == 2
        return views

    async def cached() -> set[bytes]:
        return set(await front.cached_block_hashes())

    try:
        views = run(redis_server, scenario)
    finally:
        front.shutdown()
    for in_redis, in_engine in views:
        assert in_redis == in_engine and in_engine


def test_an_unreachable_index_answers_none_at_once_and_backs_off() -> None:
    errors = []
    now = [100.0]
    link = IndexLink(
        f"redis://127.0.0.1:{free_port()}/0",
        IndexKeys("prism", "m"),
        timeout_s=0.5,
        on_error=lambda: errors.append(1),
        clock=lambda: now[0],
    )

    async def main() -> tuple[object, float]:
        started = time.monotonic()
        runs = await link.leading_blocks(["r"], HASHES)
        return runs, time.monotonic() - started

    runs, took = asyncio.run(main())

    assert runs is None and errors == [1] and took < 0.5
    assert not link.available
    now[0] += 1.0
    assert link.available


def test_a_password_protected_index_is_reached_with_the_password_from_the_environment(
    keys: IndexKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRISM_TEST_REDIS_PASSWORD", "s3cret-index")
    with EmbeddedRedis(password="s3cret-index") as server:
        settings = RedisSettings(
            url=server.url, password_env="PRISM_TEST_REDIS_PASSWORD", key_prefix=keys.prefix
        )

        async def cached() -> list[bytes]:
            return HASHES[:5]

        async def main() -> tuple[object, object, int]:
            feed = EngineFeed(lambda: [], cached)
            publisher = KVEventPublisher.connect(settings, keys.model_id, "replica-1", feed)
            publishing = asyncio.create_task(publisher.run())
            errors: list[int] = []
            link = IndexLink(settings.url, keys, 1.0, password=settings.password())
            anonymous = IndexLink(settings.url, keys, 1.0, on_error=lambda: errors.append(1))
            try:
                deadline = time.monotonic() + 10
                while (runs := await link.leading_blocks(["replica-1"], HASHES)) != {
                    "replica-1": 5
                }:
                    assert time.monotonic() < deadline, f"never published: {runs}"
                    await asyncio.sleep(0.05)
                refused = await anonymous.leading_blocks(["replica-1"], HASHES)
            finally:
                publishing.cancel()
                await asyncio.gather(publishing, return_exceptions=True)
                await publisher.redis.aclose()
            return runs, refused, len(errors)

        runs, refused, errors = asyncio.run(main())

    assert runs == {"replica-1": 5}
    assert refused is None and errors == 1
