"""How long the prefix router takes to decide: one index query plus the ranking.

Measured against a real Redis with replicas that each hold the whole prompt (the longest
script run), outside Serve, so only the router's own work is timed.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import numpy as np
from redis.asyncio import Redis

from prism.config import RouterSettings
from prism.routing.hint import RoutingHint
from prism.routing.keys import IndexKeys
from prism.routing.link import IndexLink
from prism.routing.scoring import CostModel, ReplicaLoad

BLOCK_SIZE = 16


def measure_decision_time(
    redis_url: str,
    prompt_tokens: int = 8192,
    num_replicas: int = 3,
    samples: int = 2000,
) -> dict[str, float]:
    """Percentiles (ms) of the decision time, and the ingress's hashing time for the prompt."""
    return asyncio.run(_measure(redis_url, prompt_tokens, num_replicas, samples))


async def _measure(
    redis_url: str, prompt_tokens: int, num_replicas: int, samples: int
) -> dict[str, float]:
    rng = random.Random(0)
    prompt = [rng.randrange(1000, 20000) for _ in range(prompt_tokens)]
    started = time.perf_counter()
    hint = RoutingHint.for_prompt(prompt, "bench", BLOCK_SIZE)
    hashing_ms = (time.perf_counter() - started) * 1000
    keys = IndexKeys(f"prism-bench-{uuid.uuid4().hex[:8]}", "bench")
    replicas = [f"replica-{n}" for n in range(num_replicas)]
    async with Redis.from_url(redis_url) as redis:
        for replica in replicas:
            await redis.zadd(keys.live, {replica: time.time() + 3600})
            await redis.sadd(keys.blocks(replica), *hint.block_hashes)
        try:
            times = await _decisions(IndexLink(redis_url, keys, 1.0), hint, replicas, samples, rng)
        finally:
            await redis.delete(keys.live, *(keys.blocks(replica) for replica in replicas))
    p50, p90, p99 = np.percentile(times, [50, 90, 99]).tolist()
    return {
        "prompt_tokens": prompt_tokens,
        "blocks": len(hint.block_hashes),
        "replicas": num_replicas,
        "hashing_ms": hashing_ms,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": max(times),
    }


async def _decisions(
    link: IndexLink,
    hint: RoutingHint,
    replicas: list[str],
    samples: int,
    rng: random.Random,
) -> list[float]:
    costs = CostModel.from_settings(RouterSettings())
    await link.leading_blocks(replicas, hint.block_hashes)  # connect and load the script
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        runs = await link.leading_blocks(replicas, hint.block_hashes)
        assert runs is not None, "the index did not answer"
        loads = [ReplicaLoad(r, hint.cached_tokens(run), 0) for r, run in runs.items()]
        costs.rank(hint.num_prompt_tokens, loads, rng)
        times.append((time.perf_counter() - started) * 1000)
    return times
