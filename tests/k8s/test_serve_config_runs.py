"""The chart's ``serveConfigV2``, deployed by Ray Serve itself, serves the API.

``serve run <config>`` takes a Serve config through the same path as KubeRay (the controller
imports ``import_path`` and builds the application from ``args``) on a new local Ray. The
config is the chart's own render, with only the ports and the Redis address pointed at this
machine; the pods' environment (the Redis password and API key from Secrets) is given to the
process as the pods get it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis
import yaml

from prism.client import PrismClient
from prism.redis_server import EmbeddedRedis, free_port
from prism.routing.keys import IndexKeys
from support.kube import helm_template, of_kind

pytestmark = pytest.mark.slow

API_KEY = "chart-key-5d1e"
REDIS_PASSWORD = "chart-redis-9c2b"
MODEL = "smollm2-135m-instruct"
START_TIMEOUT_S = 240
SERVE = Path(sys.executable).parent / "serve"


def chart_values(http_port: int, grpc_port: int, redis_url: str) -> dict:
    """One small CPU replica, an external Redis with a password, an API key."""
    return {
        "platform": {
            "models": [
                {
                    "id": MODEL,
                    "source": MODEL,
                    "resources": {"num_cpus": 1},
                    "engine": {"device": "cpu", "num_threads": 1, "kv_cache_bytes": "128MiB"},
                }
            ]
        },
        "service": {"httpPort": http_port, "grpcPort": grpc_port},
        "redis": {"enabled": False},
        "externalRedis": {"url": redis_url, "existingSecret": "index-redis"},
        "apiKey": {"value": API_KEY},
    }


class ServeRun:
    """A ``serve run`` process, stopped with Ctrl-C as a user would."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [str(SERVE), "run", "--address", "local", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "RAY_ADDRESS": "", **env},
            start_new_session=True,
        )

    def stop(self) -> str:
        """Stop it (and the Ray instance it started); return what it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        output, _ = self.process.communicate()
        return output


def wait_until_serving(base_url: str, run: ServeRun) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if run.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail("serve run never served the chart's config:\n" + run.stop()[-4000:])
        time.sleep(1)


@pytest.fixture(scope="module")
def chart_serve_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """The chart's serve config running; yields the HTTP base URL, gRPC target, Redis URL."""
    folder = tmp_path_factory.mktemp("chart-serve")
    http_port, grpc_port = free_port(), free_port()
    with EmbeddedRedis(password=REDIS_PASSWORD) as index:
        values = folder / "values.yaml"
        values.write_text(yaml.safe_dump(chart_values(http_port, grpc_port, index.url)))
        (rayservice,) = of_kind(helm_template(values), "RayService")
        config = folder / "serve-config.yaml"
        config.write_text(rayservice["spec"]["serveConfigV2"])
        worker = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
        pod_env = {
            "PRISM_REDIS_PASSWORD": REDIS_PASSWORD,
            "PRISM_API_KEY": API_KEY,
            # The local node stands in for a worker pod: it declares the worker's resources.
            "RAY_OVERRIDE_RESOURCES": json.loads(worker["rayStartParams"]["resources"]),
        }
        run = ServeRun(config, pod_env)
        base_url = f"http://127.0.0.1:{http_port}"
        try:
            wait_until_serving(base_url, run)
            yield base_url, f"127.0.0.1:{grpc_port}", index.url
        finally:
            run.stop()


def test_chart_serve_config_streams_a_chat_completion_over_http(
    chart_serve_run: tuple[str, str, str],
) -> None:
    base_url, _, _ = chart_serve_run
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert "Paris" in text
    anonymous = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()


def test_chart_serve_config_answers_grpc_and_the_probe_health_check(
    chart_serve_run: tuple[str, str, str],
) -> None:
    _, target, _ = chart_serve_run
    probe = PrismClient(target)  # what a Kubernetes gRPC probe sends: no metadata at all
    client = PrismClient(target, api_key=API_KEY)
    try:
        assert probe.health() == "SERVING"
        reply = client.complete(MODEL, "The capital of France is", max_tokens=4, temperature=0)
    finally:
        probe.close()
        client.close()

    assert "Paris" in reply.text


def test_replicas_publish_to_the_password_protected_index(
    chart_serve_run: tuple[str, str, str],
) -> None:
    base_url, _, redis_url = chart_serve_run
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0)
    client.completions.create(model=MODEL, prompt="Paris " * 64, max_tokens=1)
    keys = IndexKeys("prism", MODEL)
    deadline = time.monotonic() + 30
    with redis.Redis.from_url(redis_url, password=REDIS_PASSWORD) as index:
        while not (index.zcard(keys.live) and index.keys(keys.blocks("*"))):
            assert time.monotonic() < deadline, "no replica wrote to the prefix index"
            time.sleep(0.5)
