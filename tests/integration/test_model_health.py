"""Model health apart from the API's, over a real gRPC channel, HTTP and the metrics scrape.

An application of its own serves one model whose replica asks for more GPUs than any node
has: Serve keeps the replica pending, so the model never has a live replica while the
application's ingress is up. The shared platform's model, with its one replica, is the
available one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import ray
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ray import serve

from prism.redis_server import EmbeddedRedis
from prism.serving.app import APP_NAME, build_app
from support.cluster import GPUS_PER_NODE, RayCluster
from support.live_platform import MODEL_ID, Platform
from support.metrics import metric_value, scrape_metrics
from support.platforms import model_settings, platform_config

APP = "prism-model-health"
PREFIX = "/model-health"
UNPLACED = "tiny-unplaced"
LIVE_REPLICAS = "ray_prism_model_live_replicas"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_for_ingress(app: str, timeout: float = 120.0) -> None:
    """Wait until the application's ingress is healthy (its model may never be)."""
    deadline = time.monotonic() + timeout
    while True:
        application = serve.status().applications.get(app)
        ingress = application.deployments.get("Ingress") if application else None
        if ingress is not None and ingress.status == "HEALTHY":
            return
        assert time.monotonic() < deadline, f"the ingress of {app} never became healthy"
        time.sleep(0.5)


def delete_app(app: str, timeout: float = 60.0) -> None:
    """Delete the application, ending its pending replica's actor meanwhile: Serve would
    wait out the replica's graceful shutdown timeout (a minute) for an actor never started."""
    serve.delete(app, _blocking=False)
    deadline = time.monotonic() + timeout
    while app in serve.status().applications:
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry["name"].startswith(f"SERVE_REPLICA::{app}#LLMServer:"):
                with contextlib.suppress(ValueError):  # gone since it was listed
                    ray.kill(ray.get_actor(entry["name"], namespace=entry["namespace"]))
        assert time.monotonic() < deadline, f"{app} was never deleted"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def unplaced_url(
    ray_instance: RayCluster, http_port: int, tiny_chat_model: Path, redis_server: EmbeddedRedis
) -> Iterator[str]:
    """The application whose one model has no live replica, deleted at the end."""
    config = platform_config(
        model_settings(
            UNPLACED,
            tiny_chat_model,
            resources={"num_cpus": 0, "num_gpus": GPUS_PER_NODE + 1},
        ),
        http_port=http_port,
        redis_url=redis_server.url,
        suite="model-health",
    )
    target = serve.RunTarget(build_app(config), name=APP, route_prefix=PREFIX)
    serve.run_many([target], wait_for_applications_running=False)
    try:
        wait_for_ingress(APP)
        yield f"http://127.0.0.1:{http_port}{PREFIX}"
    finally:
        delete_app(APP)


def health_status(channel: grpc.Channel, app: str, service: str) -> int:
    """A probe's check of ``service`` in ``app`` (probes send no API key)."""
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    return stub.Check(request, metadata=(("application", app),), timeout=30).status


def test_the_api_serves_while_a_model_without_a_live_replica_does_not(
    unplaced_url: str, platform: Platform
) -> None:
    with grpc.insecure_channel(platform.grpc_target) as channel:
        api = [health_status(channel, APP, service) for service in ("", "prism.v1.Generation")]
        unplaced = health_status(channel, APP, f"prism.v1.Generation/{UNPLACED}")
        live = health_status(channel, APP_NAME, f"prism.v1.Generation/{MODEL_ID}")

    assert api == [SERVING, SERVING]
    assert unplaced == NOT_SERVING
    assert live == SERVING


def test_health_details_each_model_and_is_503_only_when_none_is_available(
    unplaced_url: str, platform: Platform
) -> None:
    unplaced = httpx.get(f"{unplaced_url}/health", timeout=30)
    live = httpx.get(f"{platform.base_url}/health", timeout=30)

    assert unplaced.status_code == 503
    assert unplaced.json() == {
        "status": "unavailable",
        "models": [{"id": UNPLACED, "status": "unavailable", "live_replicas": 0}],
    }
    assert live.status_code == 200
    assert live.json() == {
        "status": "ok",
        "models": [{"id": MODEL_ID, "status": "available", "live_replicas": 1}],
    }


def test_the_live_replicas_gauge_reports_each_model(unplaced_url: str, platform: Platform) -> None:
    deadline = time.monotonic() + 30
    while True:
        text = scrape_metrics(platform.metrics_urls)
        values = {
            model: metric_value(text, LIVE_REPLICAS, model=model, application=app)
            for model, app in ((UNPLACED, APP), (MODEL_ID, APP_NAME))
        }
        if None not in values.values():
            break
        assert time.monotonic() < deadline, f"{LIVE_REPLICAS} not exported: {values}"
        time.sleep(1)

    assert values == {UNPLACED: 0.0, MODEL_ID: 1.0}
