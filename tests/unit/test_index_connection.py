"""Reaching the prefix index's Redis: one back-off policy, the router's cooldown, outages.

Against a real Redis server that is stopped and started again; no Ray.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from redis.asyncio import Redis

from prism.redis_server import EmbeddedRedis
from prism.routing.connection import MAX_BACKOFF_S, Cooldown, backoff, open_redis
from prism.routing.keys import IndexKeys
from prism.routing.link import FIRST_BACKOFF_S, IndexLink
from prism.routing.publisher import EngineFeed, KVEventPublisher

HASHES = [bytes([n]) * 16 for n in range(6)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until_available(link: IndexLink, clock: Clock, step_s: float = 0.25) -> float:
    """Advance the clock until the link would ask Redis again; the seconds it took."""
    waited = 0.0
    while not link.available:
        clock.now += step_s
        waited += step_s
    return waited


def counting_link(
    server: EmbeddedRedis, keys: IndexKeys, timeout_s: float, clock: Callable[[], float]
) -> tuple[IndexLink, list[int]]:
    """A link to ``server`` and the list that counts its errors."""
    errors: list[int] = []
    link = IndexLink(server.url, keys, timeout_s, on_error=lambda: errors.append(1), clock=clock)
    return link, errors


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as redis_server:
        yield redis_server


@pytest.fixture
def keys() -> IndexKeys:
    return IndexKeys(f"test-{uuid.uuid4().hex[:8]}", "model-a")


def test_pauses_double_from_the_first_one_up_to_the_cap() -> None:
    pauses = backoff(0.5)

    assert [pauses.compute(failures) for failures in range(1, 7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        MAX_BACKOFF_S,
        MAX_BACKOFF_S,
    ]


def test_a_cooldown_grows_with_failures_in_a_row_and_a_success_ends_it() -> None:
    clock = Clock()
    cooldown = Cooldown(backoff(0.5), clock)
    assert cooldown.ready

    assert cooldown.failed() == 0.5
    assert not cooldown.ready
    clock.now += 0.5
    assert cooldown.ready
    assert cooldown.failed() == 1.0
    clock.now += 0.5
    assert not cooldown.ready

    cooldown.succeeded()
    assert cooldown.ready
    assert cooldown.failed() == 0.5


async def live_replica(server: EmbeddedRedis, keys: IndexKeys, replica_id: str) -> None:
    async with Redis.from_url(server.url) as redis:
        await redis.zadd(keys.live, {replica_id: time.time() + 60})
        await redis.sadd(keys.blocks(replica_id), *HASHES[:3])


def test_the_link_gives_up_at_once_while_redis_is_down_and_answers_again_after(
    server: EmbeddedRedis, keys: IndexKeys
) -> None:
    clock = Clock()
    link, errors = counting_link(server, keys, 0.5, clock)

    async def main() -> None:
        await live_replica(server, keys, "r")
        assert await link.leading_blocks(["r"], HASHES) == {"r": 3}

        server.stop()
        waited = []
        for _ in range(3):
            started = time.monotonic()
            assert await link.leading_blocks(["r"], HASHES) is None
            assert time.monotonic() - started < link.timeout_s
            assert await link.leading_blocks(["r"], HASHES) is None  # skipped: not counted
            waited.append(wait_until_available(link, clock))
        assert errors == [1, 1, 1]
        assert waited == [FIRST_BACKOFF_S, 2 * FIRST_BACKOFF_S, 4 * FIRST_BACKOFF_S]

        server.start()
        await live_replica(server, keys, "r")
        assert await link.leading_blocks(["r"], HASHES) == {"r": 3}
        assert len(errors) == 3
        assert link.cooldown.failed() == FIRST_BACKOFF_S  # the success reset the back-off

    asyncio.run(main())


def test_a_redis_restart_between_queries_costs_the_link_no_error(
    server: EmbeddedRedis, keys: IndexKeys
) -> None:
    link, errors = counting_link(server, keys, 0.5, time.monotonic)

    async def main() -> None:
        await live_replica(server, keys, "r")
        assert await link.leading_blocks(["r"], HASHES) == {"r": 3}
        server.stop()
        server.start()  # the link's pooled connection is now closed
        await live_replica(server, keys, "r")
        assert await link.leading_blocks(["r"], HASHES) == {"r": 3}

    asyncio.run(main())

    assert errors == []


BUSY_FOR_A_SECOND = """
local start = redis.call('TIME')
repeat
    local now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) >= 1000000
"""
"""A script that holds the (single-threaded) server for a second: no other reply meanwhile."""


def test_a_query_slower_than_the_timeout_counts_as_an_error(
    server: EmbeddedRedis, keys: IndexKeys
) -> None:
    clock = Clock()  # stands still: the cooldown is still running after the slow reply
    link, errors = counting_link(server, keys, 0.2, clock)

    async def main() -> tuple[object, float]:
        async with Redis.from_url(server.url) as admin:
            pause = asyncio.create_task(admin.eval(BUSY_FOR_A_SECOND, 0))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            runs = await link.leading_blocks(["r"], HASHES)
            took = time.monotonic() - started
            await pause
        return runs, took

    runs, took = asyncio.run(main())

    assert runs is None and errors == [1] and took < 0.5
    assert not link.available


def test_the_publisher_republishes_its_blocks_when_redis_comes_back_empty(
    server: EmbeddedRedis, keys: IndexKeys
) -> None:
    cached = HASHES[:4]

    async def cached_block_hashes() -> list[bytes]:
        return cached

    async def published(within_s: float) -> None:
        """Wait until Redis holds the replica's whole block set and its liveness."""
        deadline = time.monotonic() + within_s
        async with Redis.from_url(server.url) as admin:
            while (
                await admin.smembers(keys.blocks("replica-1")) != set(cached)
                or await admin.zscore(keys.live, "replica-1") is None
            ):
                assert time.monotonic() < deadline, "the blocks were not published"
                await asyncio.sleep(0.02)

    async def main() -> int:
        redis = open_redis(server.url, None, 0.5)
        feed = EngineFeed(lambda: [], cached_block_hashes)
        publisher = KVEventPublisher(redis, keys, "replica-1", feed, 5.0, interval_s=0.01)
        publishing = asyncio.create_task(publisher.run())
        try:
            await published(within_s=5)
            server.stop()
            await asyncio.sleep(0.5)  # errors in a row: pauses of 10, 20, 40... ms
            server.start()
            await published(within_s=5)
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
            await redis.aclose()
        return publisher.full_syncs

    assert asyncio.run(main()) == 2
