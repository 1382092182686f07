"""One Ray instance, one real Redis and one Prism Serve application for all integration tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import ray
from ray import serve

from prism.config import PlatformConfig
from prism.redis_server import EmbeddedRedis, free_port
from prism.serving.app import APP_NAME, build_app, deployment_name

API_KEY = "test-key-7f3a"
MODEL_ID = "smollm2-135m-instruct"
MAX_NUM_SEQS = 6
MAX_QUEUED = 2


@dataclass(frozen=True)
class Platform:
    """The running test platform: where to reach it and how to look inside."""

    base_url: str
    metrics_url: str
    config: PlatformConfig

    def client(self, **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=API_KEY, **options)

    def http(self) -> httpx.Client:
        headers = {"authorization": f"Bearer {API_KEY}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120)

    def engine_stats(self) -> dict:
        handle = serve.get_deployment_handle(
            deployment_name(self.config.models[0]), app_name=APP_NAME
        )
        return handle.stats.remote().result()

    def wait_until_idle(self, timeout: float = 30.0) -> dict:
        """Engine stats once no request runs and every KV block is free again."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.engine_stats()
            idle = stats["num_running"] == stats["num_waiting"] == 0
            if idle and stats["num_free_kv_blocks"] == stats["num_kv_blocks"]:
                return stats
            assert time.monotonic() < deadline, f"engine never went idle: {stats}"
            time.sleep(0.1)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[int]:
    """A local Ray for the whole session; yields its Prometheus metrics port."""
    metrics_port = free_port()
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 1000},
        logging_level="WARNING",
    )
    yield metrics_port
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def platform(
    ray_instance: int, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Platform:
    key_file = tmp_path_factory.mktemp("secrets") / "api-key"
    key_file.write_text(API_KEY + "\n")
    config = PlatformConfig.model_validate(
        {
            "models": [
                {
                    "id": MODEL_ID,
                    "replicas": 1,
                    "resources": {"num_cpus": 1},
                    "engine": {
                        "num_threads": 1,
                        "kv_cache_bytes": "96MiB",
                        "max_num_seqs": MAX_NUM_SEQS,
                    },
                    "max_queued_requests": MAX_QUEUED,
                }
            ],
            "http": {"port": free_port(), "api_key_file": str(Path(key_file))},
            "redis": {"url": redis_server.url},
        }
    )
    serve.start(http_options={"host": "127.0.0.1", "port": config.http.port})
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    return Platform(
        base_url=f"http://127.0.0.1:{config.http.port}",
        metrics_url=f"http://127.0.0.1:{ray_instance}/metrics",
        config=config,
    )
