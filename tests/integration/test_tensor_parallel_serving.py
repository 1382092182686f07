"""Tensor-parallel replicas through Serve on the simulated GPU nodes (engines on CPU, gloo)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import ray
from ray import serve

from prism.config import ModelSettings, PlatformConfig
from prism.proto.stubs import pb, rpc
from prism.redis_server import EmbeddedRedis
from prism.serving.app import build_app, deployment_name
from prism.serving.headers import REPLICA_HEADER
from prism.serving.rank_actors import RANK_ACTOR_PREFIX
from support.cluster import RayCluster, ServePorts
from support.platforms import model_settings, platform_config

APP = "prism-tp"
PREFIX = "/tp"
ONE_RANK, TWO_RANKS = "tiny-tp1", "tiny-tp2"
TP_REPLICAS = 2
DEPLOYMENT = deployment_name(ModelSettings(id=TWO_RANKS))


def tp_config(model_path: Path, http_port: int, redis_url: str) -> PlatformConfig:
    """The tiny model twice: one rank on the head node, two ranks per replica on GPU nodes."""
    engine = {"device": "cpu", "kv_cache_bytes": "16MiB"}
    return platform_config(
        model_settings(ONE_RANK, model_path, resources={"num_cpus": 0.25}, engine=engine),
        model_settings(
            TWO_RANKS,
            model_path,
            replicas=TP_REPLICAS,
            resources={"num_cpus": 0, "num_gpus": 1},
            engine=engine | {"tensor_parallel_size": 2},
        ),
        http_port=http_port,
        redis_url=redis_url,
        suite="tp",
    )


@pytest.fixture(scope="module")
def tp_base_url(
    ray_instance: RayCluster, http_port: int, tiny_chat_model: Path, redis_server: EmbeddedRedis
) -> Iterator[str]:
    serve.run(
        build_app(tp_config(tiny_chat_model, http_port, redis_server.url)),
        name=APP,
        route_prefix=PREFIX,
    )
    try:
        yield f"http://127.0.0.1:{http_port}{PREFIX}"
    finally:
        serve.delete(APP)


def complete(base_url: str, model: str, prompt: str, max_tokens: int = 24) -> httpx.Response:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(f"{base_url}/v1/completions", json=body, timeout=60)


def live_replicas() -> set[str]:
    """Ids of the two-rank deployment's live replicas (rank 0 of each)."""
    prefix = f"SERVE_REPLICA::{APP}#{DEPLOYMENT}#"
    names = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)]
    return {name.removeprefix(prefix) for name in names if name.startswith(prefix)}


def rank_placements() -> dict[str, dict]:
    """Replica id -> where its rank 1 runs (node, pid, placement group)."""
    placements = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].startswith(RANK_ACTOR_PREFIX):
            replica_id = entry["name"].removeprefix(RANK_ACTOR_PREFIX).rsplit("#", 1)[0]
            actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
            placements[replica_id] = ray.get(actor.where.remote(), timeout=30)
    return placements


def wait_for_replicas(count: int, excluding: set[str], timeout: float = 120.0) -> set[str]:
    """Wait for ``count`` healthy replicas, none of them in ``excluding``; return their ids."""
    deadline = time.monotonic() + timeout
    while True:
        status = serve.status().applications[APP].deployments[DEPLOYMENT]
        replicas = live_replicas()
        if status.status == "HEALTHY" and len(replicas) == count and not replicas & excluding:
            return replicas
        assert time.monotonic() < deadline, f"replicas never recovered: {status}"
        time.sleep(0.5)


def test_two_ranks_through_serve_give_the_greedy_text_of_one(tp_base_url: str) -> None:
    for prompt in ("The capital of France is", "1 2 3 4 5", "Tensor parallel serving"):
        one = complete(tp_base_url, ONE_RANK, prompt)
        two = complete(tp_base_url, TWO_RANKS, prompt)
        assert one.status_code == two.status_code == 200, (one.text, two.text)

        assert two.json()["choices"][0]["text"] == one.json()["choices"][0]["text"]
        assert two.json()["usage"] == one.json()["usage"]


def test_each_replica_keeps_its_ranks_on_one_gpu_node(
    tp_base_url: str, ray_instance: RayCluster
) -> None:
    placements = rank_placements()
    groups = ray.util.placement_group_table()

    assert set(placements) == live_replicas() and len(placements) == TP_REPLICAS
    for rank1 in placements.values():
        group = groups[rank1["placement_group_id"]]
        assert group["strategy"] == "STRICT_PACK"
        # bundle 0 holds the replica (rank 0), bundle 1 the rank actor: one node for both
        assert set(group["bundles_to_node_id"].values()) == {rank1["node_id"]}
        assert rank1["node_id"] in ray_instance.gpu_node_ids
    # Each node declares two GPUs, so each two-GPU replica fills one node.
    assert len({rank1["node_id"] for rank1 in placements.values()}) == TP_REPLICAS


def test_a_killed_rank_fails_its_requests_and_serve_replaces_the_replica(
    tp_base_url: str, serve_ports: ServePorts
) -> None:
    """An HTTP stream and a gRPC stream are in flight when their replicas lose rank 1."""
    body = {
        "model": TWO_RANKS,
        "prompt": "count",
        "max_tokens": 3000,
        "ignore_eos": True,
        "stream": True,
    }
    rpc_request = pb.GenerateRequest(
        model=TWO_RANKS,
        text="count",
        sampling=pb.SamplingParameters(max_tokens=3000, ignore_eos=True),
    )
    with (
        grpc.insecure_channel(f"127.0.0.1:{serve_ports.grpc}") as channel,
        httpx.stream("POST", f"{tp_base_url}/v1/completions", json=body, timeout=60) as stream,
    ):
        rpc_stream = rpc.GenerationStub(channel).Generate(
            rpc_request, metadata=(("application", APP),), timeout=60
        )
        failed = {next(rpc_stream).replica, stream.headers[REPLICA_HEADER]}
        events = stream.iter_lines()
        assert next(line for line in events if line.startswith("data: "))
        placements = rank_placements()
        for replica in failed:
            os.kill(placements[replica]["pid"], signal.SIGKILL)
        rest = [line.removeprefix("data: ") for line in events if line.startswith("data: ")]
        with pytest.raises(grpc.RpcError) as rpc_failure:
            list(rpc_stream)

    assert rest[-1] == "[DONE]"
    error = json.loads(rest[-2])["error"]
    assert error["type"] == "service_unavailable"
    assert "tensor-parallel ranks" in error["message"]
    assert rpc_failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "tensor-parallel ranks" in rpc_failure.value.details()

    wait_for_replicas(TP_REPLICAS, excluding=failed)
    for prompt in ("after the failure", "a second request", "and a third"):
        response = complete(tp_base_url, TWO_RANKS, prompt)
        assert response.status_code == 200, response.text
        assert response.headers[REPLICA_HEADER] not in failed
