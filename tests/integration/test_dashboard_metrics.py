"""Every metric the shipped Grafana dashboards query is exported by a running platform.

An application of its own serves one tiny-model replica under Prism's autoscaling policy,
with a KV cache small enough that concurrent long requests preempt each other and a Redis
the test stops for a moment. Its traffic makes every metric family appear (Ray exports a
counter only once it has grown); the scrape must then hold each name the dashboards use.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from ray import serve

from prism.config import PlatformConfig
from prism.redis_server import EmbeddedRedis
from prism.serving.app import build_app
from prism.serving.headers import PREDICTED_CACHED_HEADER
from support.cluster import RayCluster
from support.dashboards import load_dashboards
from support.metrics import metric_samples, scrape_metrics
from support.platforms import model_settings, platform_config, quick_autoscaling

APP = "prism-dashboards"
PREFIX = "/dashboards"
MODEL = "tiny-dashboards"
BLOCK_SIZE = 16
NUM_KV_BLOCKS = 16
"""256 tokens of KV cache: one long request fits, three at once do not."""
LONG_OUTPUT_TOKENS = 200
EXPORT_TIMEOUT_S = 30.0


def dashboards_config(model_path: Path, http_port: int, redis_url: str) -> PlatformConfig:
    return platform_config(
        model_settings(
            MODEL,
            model_path,
            resources={"num_cpus": 0.5},
            engine={"block_size": BLOCK_SIZE, "num_kv_blocks": NUM_KV_BLOCKS},
            autoscaling=quick_autoscaling(1, 1, look_back_s=2),
        ),
        http_port=http_port,
        redis_url=redis_url,
        suite="dashboard",
        redis={"timeout_s": 0.5},
        router={"policy": "prefix", "stats_period_s": 0.5},
    )


@dataclass(frozen=True)
class DashboardPlatform:
    """The running application, the Redis its index lives in, and the cluster's scrape URLs."""

    base_url: str
    redis_server: EmbeddedRedis
    metrics_urls: tuple[str, ...]

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def dashboard_platform(
    ray_instance: RayCluster, http_port: int, tiny_chat_model: Path
) -> Iterator[DashboardPlatform]:
    """The application with a Redis of its own (the test stops it), deleted at the end."""
    with EmbeddedRedis() as redis_server:
        config = dashboards_config(tiny_chat_model, http_port, redis_server.url)
        serve.run(build_app(config), name=APP, route_prefix=PREFIX)
        try:
            yield DashboardPlatform(
                f"http://127.0.0.1:{http_port}{PREFIX}", redis_server, ray_instance.metrics_urls
            )
        finally:
            serve.delete(APP)


def stream_a_chat(platform: DashboardPlatform) -> None:
    """Latencies, token counts and API requests."""
    stream = platform.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say something."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    [usage] = [chunk.usage for chunk in stream if chunk.usage]
    assert usage.completion_tokens == 8


def repeat_a_prefix(platform: DashboardPlatform, rng: random.Random) -> None:
    """Prefix cache hits the router predicted: routing precision and Redis latency."""
    prefix = tokens(4 * BLOCK_SIZE, rng)
    deadline = time.monotonic() + 20
    while True:
        response = httpx.post(
            f"{platform.base_url}/v1/completions",
            json={"model": MODEL, "prompt": prefix + tokens(4, rng), "max_tokens": 2},
            timeout=60,
        )
        response.raise_for_status()
        details = response.json()["usage"].get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens", 0)
        if int(response.headers.get(PREDICTED_CACHED_HEADER, 0)) > 0 and cached > 0:
            return
        assert time.monotonic() < deadline, "the router never predicted the cached prefix"
        time.sleep(0.1)


def ask_for_an_unknown_model(platform: DashboardPlatform) -> None:
    """An API error."""
    with pytest.raises(openai.NotFoundError):
        platform.client().completions.create(model="no-such-model", prompt="hi", max_tokens=1)


def overfill_the_kv_cache(platform: DashboardPlatform, rng: random.Random) -> None:
    """Three long requests at once need more blocks than the cache has: preemptions."""

    async def one(client: openai.AsyncOpenAI) -> int:
        completion = await client.completions.create(
            model=MODEL,
            prompt=tokens(8, rng),
            max_tokens=LONG_OUTPUT_TOKENS,
            extra_body={"ignore_eos": True},
        )
        return completion.usage.completion_tokens

    async def burst() -> list[int]:
        async with platform.async_client() as client:
            return await asyncio.gather(*(one(client) for _ in range(3)))

    assert asyncio.run(burst()) == [LONG_OUTPUT_TOKENS] * 3


def route_while_redis_is_down(platform: DashboardPlatform, rng: random.Random) -> None:
    """A router query that fails: a Redis error, and the request is routed by load."""
    platform.redis_server.stop()
    try:
        completion = platform.client().completions.create(
            model=MODEL, prompt=tokens(2 * BLOCK_SIZE, rng), max_tokens=2
        )
    finally:
        platform.redis_server.start()
    assert completion.usage.completion_tokens == 2


def tokens(count: int, rng: random.Random) -> list[int]:
    """Ordinary vocabulary ids (no special tokens)."""
    return [rng.randrange(1000, 20000) for _ in range(count)]


def missing_names(platform: DashboardPlatform, names: set[str]) -> list[str]:
    """The names without a sample from this test's application."""
    text = scrape_metrics(platform.metrics_urls)
    return sorted(name for name in names if not metric_samples(text, name, application=APP))


def test_every_metric_the_dashboards_query_is_exported(
    dashboard_platform: DashboardPlatform,
) -> None:
    used = {dashboard.uid: dashboard.metrics() for dashboard in load_dashboards()}
    names = set().union(*used.values())
    rng = random.Random(7)

    stream_a_chat(dashboard_platform)
    repeat_a_prefix(dashboard_platform, rng)
    ask_for_an_unknown_model(dashboard_platform)
    overfill_the_kv_cache(dashboard_platform, rng)
    route_while_redis_is_down(dashboard_platform, rng)

    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    while missing := missing_names(dashboard_platform, names):
        if time.monotonic() > deadline:
            by_dashboard = {
                uid: sorted(set(missing) & metrics)
                for uid, metrics in used.items()
                if set(missing) & metrics
            }
            raise AssertionError(f"dashboards query metrics nobody exports: {by_dashboard}")
        time.sleep(1)
