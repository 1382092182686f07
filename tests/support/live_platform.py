"""The Prism application the integration tests run against, and how to look inside it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import openai
from ray import serve

from prism.config import PlatformConfig
from prism.serving.app import APP_NAME, deployment_name

API_KEY = "test-key-7f3a"
"""The single key: tenant ``default``."""
TENANT_KEYS = {"alpha": "alpha-key-51c2", "beta": "beta-key-9e07", "limited": "limited-key-2d4b"}
"""The keys file's tenants, each with a key of its own."""
LIMITED_CONCURRENCY = 2
"""Requests tenant ``limited`` may have in flight (the others have no limit)."""
MODEL_ID = "smollm2-135m-instruct"
MAX_NUM_SEQS = 6
MAX_QUEUED = 2


@dataclass(frozen=True)
class Platform:
    """The running test platform: where to reach it and how to look inside."""

    base_url: str
    grpc_target: str
    metrics_urls: tuple[str, ...]
    config: PlatformConfig

    @property
    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC call metadata: this application (several share the proxy) and the API key."""
        return self.grpc_metadata_of(API_KEY)

    def grpc_metadata_of(self, api_key: str) -> tuple[tuple[str, str], ...]:
        """gRPC call metadata with ``api_key``."""
        return (("application", APP_NAME), ("authorization", f"Bearer {api_key}"))

    def client(self, api_key: str = API_KEY, **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, **options)

    def http(self, api_key: str = API_KEY) -> httpx.Client:
        headers = {"authorization": f"Bearer {api_key}"}
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
