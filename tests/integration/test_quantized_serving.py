"""SmolLM2 quantized to int8, to int4 and in its own GGUF blocks behind the OpenAI API, as a
Serve application of its own."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from prism.redis_server import EmbeddedRedis
from support.cluster import RayCluster
from support.platforms import model_settings, platform_config
from support.routing_platform import RoutingPlatform, serve_routing_app

MODES = ("int8", "int4", "gguf")
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def quantized_platform(
    ray_instance: RayCluster, http_port: int, redis_server: EmbeddedRedis
) -> Iterator[RoutingPlatform]:
    """One replica of the default model per quantization."""
    models = [
        model_settings(
            f"smollm2-{mode}",
            resources={"num_cpus": 0.5},
            engine={"quantization": mode, "kv_cache_bytes": "64MiB"},
        )
        for mode in MODES
    ]
    config = platform_config(
        *models, http_port=http_port, redis_url=redis_server.url, suite="quantized"
    )
    with serve_routing_app(config, redis_server, ray_instance.metrics_urls, "-quantized") as app:
        yield app


@pytest.mark.parametrize("mode", MODES)
def test_a_quantized_model_answers_the_capital_of_france(
    quantized_platform: RoutingPlatform, mode: str
) -> None:
    client = openai.OpenAI(base_url=f"{quantized_platform.base_url}/v1", api_key="unused")

    completion = client.chat.completions.create(
        model=f"smollm2-{mode}", messages=QUESTION, max_tokens=16, temperature=0
    )

    assert "Paris" in (completion.choices[0].message.content or "")
