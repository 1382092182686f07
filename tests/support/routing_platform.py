"""A Prism application with three tiny-model replicas and two ingress replicas, for routing."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import redis
from ray import serve

from prism.config import PlatformConfig
from prism.hashing import BlockHash
from prism.redis_server import EmbeddedRedis
from prism.routing.hint import RoutingHint
from prism.routing.keys import IndexKeys
from prism.serving.app import build_app
from prism.serving.headers import PREDICTED_CACHED_HEADER, REPLICA_HEADER, SESSION_HEADER
from support.platforms import model_settings, platform_config

ROUTING_APP = "prism-routing"
ROUTE_PREFIX = "/routing"
TINY_MODEL_ID = "tiny-chat"
BLOCK_SIZE = 16


@dataclass(frozen=True)
class Completion:
    """What one routed request reported about where it ran."""

    replica: str
    cached_tokens: int
    predicted_cached_tokens: int | None


@dataclass
class RoutingPlatform:
    """The running routing application, its Redis, and ways to look into the index."""

    base_url: str
    metrics_urls: tuple[str, ...]
    config: PlatformConfig
    redis_server: EmbeddedRedis

    @property
    def keys(self) -> IndexKeys:
        return IndexKeys(self.config.redis.key_prefix, TINY_MODEL_ID)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url)

    def complete(
        self, prompt: list[int], max_tokens: int = 2, session_id: str | None = None
    ) -> Completion:
        """One completion of token ids; raises on any HTTP error."""
        body = {"model": TINY_MODEL_ID, "prompt": prompt, "max_tokens": max_tokens}
        headers = {} if session_id is None else {SESSION_HEADER: session_id}
        response = httpx.post(
            f"{self.base_url}/v1/completions", json=body, headers=headers, timeout=60
        )
        response.raise_for_status()
        usage = response.json()["usage"]
        details = usage.get("prompt_tokens_details") or {}
        predicted = response.headers.get(PREDICTED_CACHED_HEADER)
        return Completion(
            response.headers[REPLICA_HEADER],
            details.get("cached_tokens", 0),
            None if predicted is None else int(predicted),
        )

    def replica_blocks(self, replica_id: str) -> set[BlockHash]:
        with self.redis() as client:
            return set(client.smembers(self.keys.blocks(replica_id)))

    def wait_until_indexed(self, replica_id: str, hashes: list[BlockHash], timeout: float = 10):
        """Wait until the replica's published block set holds every one of ``hashes``."""
        deadline = time.monotonic() + timeout
        while not set(hashes) <= self.replica_blocks(replica_id):
            assert time.monotonic() < deadline, f"{replica_id} never published the blocks"
            time.sleep(0.05)


@contextmanager
def serve_routing_app(
    config: PlatformConfig,
    redis_server: EmbeddedRedis,
    metrics_urls: tuple[str, ...],
    suffix: str,
) -> Iterator[RoutingPlatform]:
    """Run ``config`` as its own Serve application, named and routed with ``suffix``."""
    name, prefix = ROUTING_APP + suffix, ROUTE_PREFIX + suffix
    serve.run(build_app(config), name=name, route_prefix=prefix)
    try:
        yield RoutingPlatform(
            base_url=f"http://127.0.0.1:{config.http.port}{prefix}",
            metrics_urls=metrics_urls,
            config=config,
            redis_server=redis_server,
        )
    finally:
        serve.delete(name)


def routing_config(
    redis_url: str, http_port: int, model_path: str, policy: str = "prefix"
) -> PlatformConfig:
    """Three tiny replicas with small KV caches (so eviction is easy) and two ingresses."""
    return platform_config(
        model_settings(
            TINY_MODEL_ID,
            model_path,
            replicas=3,
            resources={"num_cpus": 0.5},
            engine={"num_kv_blocks": 96, "block_size": BLOCK_SIZE},
        ),
        http_port=http_port,
        redis_url=redis_url,
        suite="routing",
        http={"ingress_replicas": 2},
        redis={"liveness_ttl_s": 2.0, "timeout_s": 0.5},
        router={"policy": policy, "predicted_ttl_s": 2.0, "stats_period_s": 0.5},
    )


def random_tokens(count: int, rng: random.Random) -> list[int]:
    """Ordinary vocabulary ids (no special tokens)."""
    return [rng.randrange(1000, 20000) for _ in range(count)]


def prompt_hashes(prompt: list[int]) -> list[BlockHash]:
    """The block hashes the router computes for a prompt."""
    return RoutingHint.for_prompt(prompt, TINY_MODEL_ID, BLOCK_SIZE).block_hashes
