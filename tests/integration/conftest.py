"""A simulated Ray cluster, one real Redis and one Prism Serve application for the tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.serve.config import ProxyLocation

from prism.config import GRPCSettings
from prism.redis_server import EmbeddedRedis, free_port
from prism.serving.app import APP_NAME, build_app, grpc_options
from support.cluster import GPU_NODES, RayCluster, ServePorts, gpu_node_args, head_node_args
from support.live_platform import (
    API_KEY,
    LIMITED_CONCURRENCY,
    MAX_NUM_SEQS,
    MAX_QUEUED,
    MODEL_ID,
    TENANT_KEYS,
    Platform,
)
from support.platforms import model_settings, platform_config
from support.routing_platform import RoutingPlatform, routing_config, serve_routing_app


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[RayCluster]:
    """A simulated cluster for the whole session: a CPU head node and three GPU worker nodes."""
    cluster = Cluster()
    head = cluster.add_node(**head_node_args())
    gpu_nodes = [cluster.add_node(**gpu_node_args()) for _ in range(GPU_NODES)]
    ray.init(address=cluster.address, logging_level="WARNING")
    yield RayCluster.of(head, gpu_nodes)
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def serve_ports(ray_instance: RayCluster) -> ServePorts:
    """Serve's HTTP and gRPC proxies on the head node only (every node shares this host)."""
    ports = ServePorts(http=free_port(), grpc=free_port())
    serve.start(
        proxy_location=ProxyLocation.HeadOnly,
        http_options={"host": "127.0.0.1", "port": ports.http},
        grpc_options=grpc_options(GRPCSettings(port=ports.grpc)),
    )
    return ports


@pytest.fixture(scope="session")
def http_port(serve_ports: ServePorts) -> int:
    return serve_ports.http


@pytest.fixture(scope="session")
def platform(
    ray_instance: RayCluster,
    serve_ports: ServePorts,
    redis_server: EmbeddedRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Platform:
    secrets = tmp_path_factory.mktemp("secrets")
    key_file = secrets / "api-key"
    key_file.write_text(API_KEY + "\n")
    limits = {"limited": LIMITED_CONCURRENCY}
    tenants = [
        {"tenant": name, "key": key, "max_concurrent_requests": limits.get(name)}
        for name, key in TENANT_KEYS.items()
    ]
    keys_file = secrets / "api-keys.json"
    keys_file.write_text(json.dumps(tenants))
    config = platform_config(
        model_settings(
            MODEL_ID,
            engine={"kv_cache_bytes": "96MiB", "max_num_seqs": MAX_NUM_SEQS},
            max_queued_requests=MAX_QUEUED,
        ),
        http_port=serve_ports.http,
        redis_url=redis_server.url,
        http={
            "api_key_file": str(key_file),
            "api_keys_file": str(keys_file),
            # A ping every 50 ms: most streams of the tests carry some, and clients skip them.
            "sse_ping_interval_s": 0.05,
        },
    )
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    return Platform(
        base_url=f"http://127.0.0.1:{config.http.port}",
        grpc_target=f"127.0.0.1:{serve_ports.grpc}",
        metrics_urls=ray_instance.metrics_urls,
        config=config,
    )


@pytest.fixture(scope="module")
def routing_platform(
    ray_instance: RayCluster, http_port: int, tiny_chat_model: Path
) -> Iterator[RoutingPlatform]:
    """Three tiny replicas behind two ingresses, with a Redis of their own (tests stop it)."""
    with EmbeddedRedis() as redis_server:
        config = routing_config(redis_server.url, http_port, str(tiny_chat_model))
        with serve_routing_app(config, redis_server, ray_instance.metrics_urls, "") as platform:
            yield platform


@pytest.fixture(scope="module")
def session_platform(
    ray_instance: RayCluster, http_port: int, tiny_chat_model: Path, redis_server: EmbeddedRedis
) -> Iterator[RoutingPlatform]:
    """The same replicas routed by the ``session`` policy."""
    config = routing_config(redis_server.url, http_port, str(tiny_chat_model), policy="session")
    with serve_routing_app(config, redis_server, ray_instance.metrics_urls, "-session") as platform:
        yield platform
