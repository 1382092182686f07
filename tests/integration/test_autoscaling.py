"""Autoscaling on the simulated cluster: replicas follow the load across GPU nodes and drain.

One tiny-model deployment (one GPU per replica, engine on CPU) scales between 1 and 3
replicas under Prism's policy, with short delays and windows so it reacts in seconds.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import ray
from openai import AsyncOpenAI
from ray import serve

from prism.bench.autoscale.load import BackgroundLoad, TimedRecord
from prism.bench.autoscale.replica_watch import ReplicaSample, sample_replicas
from prism.bench.serve.load import StreamChat, openai_chat
from prism.bench.serve.prompts import conversations
from prism.config import ModelSettings, PlatformConfig
from prism.redis_server import EmbeddedRedis
from prism.serving.app import build_app, deployment_name
from support.cluster import RayCluster
from support.platforms import model_settings, platform_config, quick_autoscaling

APP = "prism-autoscale"
PREFIX = "/autoscale"
MODEL = "tiny-autoscale"
DEPLOYMENT = deployment_name(ModelSettings(id=MODEL))
MIN_REPLICAS, MAX_REPLICAS = 1, 3
BUSY_CLIENTS = 8  # 4x what one replica's batch of 2 takes: requests queue
LIGHT_CLIENTS = 2  # well under the scale-in ratio of 3 replicas
SECONDS_AT_MAX = 12.0
TARGETS = {"target_ongoing_requests": 4, "max_waiting_per_replica": 1, "ttft_p90_objective_s": 5.0}
"""Small targets, so a few clients make one replica too few."""
WINDOWS = {"look_back_s": 3, "upscale_delay_s": 1, "downscale_delay_s": 4}
"""Short windows and delays, so the replicas follow the load within seconds."""


def autoscaling_config(model_path: Path, http_port: int, redis_url: str) -> PlatformConfig:
    return platform_config(
        model_settings(
            MODEL,
            model_path,
            resources={"num_cpus": 0, "num_gpus": 1},
            engine={"device": "cpu", "kv_cache_bytes": "16MiB", "max_num_seqs": 2},
            autoscaling=quick_autoscaling(MIN_REPLICAS, MAX_REPLICAS, **WINDOWS, **TARGETS),
        ),
        http_port=http_port,
        redis_url=redis_url,
        suite="autoscale",
    )


@pytest.fixture(scope="module")
def autoscaling_url(
    ray_instance: RayCluster, http_port: int, tiny_chat_model: Path, redis_server: EmbeddedRedis
) -> Iterator[str]:
    config = autoscaling_config(tiny_chat_model, http_port, redis_server.url)
    serve.run(build_app(config), name=APP, route_prefix=PREFIX)
    try:
        yield f"http://127.0.0.1:{http_port}{PREFIX}"
    finally:
        serve.delete(APP)


class Timeline:
    """Replica samples taken while waiting for the deployment to reach a state."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.samples: list[ReplicaSample] = []

    def wait_until(
        self, reached: Callable[[ReplicaSample], bool], timeout: float, what: str
    ) -> ReplicaSample:
        deadline = time.monotonic() + timeout
        while True:
            sample = sample_replicas(APP, DEPLOYMENT, self.since)
            self.samples.append(sample)
            if reached(sample):
                return sample
            assert time.monotonic() < deadline, f"{what}: never happened; {self.samples[-20:]}"
            time.sleep(0.5)


def settled(replicas: int) -> Callable[[ReplicaSample], bool]:
    """Exactly ``replicas`` running, none starting or stopping."""
    return lambda s: (s.running, s.starting, s.stopping) == (replicas, 0, 0)


def live_replica_actors() -> list[ray.actor.ActorHandle]:
    prefix = f"SERVE_REPLICA::{APP}#{DEPLOYMENT}#"
    return [
        ray.get_actor(entry["name"], namespace=entry["namespace"])
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["name"].startswith(prefix)
    ]


def chat_stream(base_url: str) -> Callable[[], StreamChat]:
    def make() -> StreamChat:
        client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        return openai_chat(client, MODEL)

    return make


def median_ttft(records: list[TimedRecord], start: float, end: float) -> float:
    ttfts = [r.record.ttft for r in records if start <= r.sent_at < end and r.record.ttft]
    assert len(ttfts) >= 3, f"too few requests sent in [{start:.1f}, {end:.1f}) s"
    return statistics.median(ttfts)


def test_replicas_follow_the_load_across_gpu_nodes_and_scale_in_without_losing_requests(
    autoscaling_url: str, ray_instance: RayCluster
) -> None:
    prompts = conversations("robots", 16)
    with BackgroundLoad(chat_stream(autoscaling_url), prompts, max_tokens=48) as load:
        timeline = Timeline(since=load.started)
        timeline.wait_until(settled(MIN_REPLICAS), 60, "start at min_replicas")

        load.resize(BUSY_CLIENTS)
        scaled_out = timeline.wait_until(lambda s: s.running > MIN_REPLICAS, 60, "scale out")
        at_max = timeline.wait_until(settled(MAX_REPLICAS), 120, "reach max_replicas")
        # Each node declares two GPUs, so packing was possible: the replicas were spread.
        assert len(set(at_max.nodes)) == MAX_REPLICAS
        assert set(at_max.nodes) <= set(ray_instance.gpu_node_ids)
        time.sleep(SECONDS_AT_MAX)
        busy_end = time.monotonic() - load.started

        load.resize(LIGHT_CLIENTS)
        timeline.wait_until(
            lambda s: s.running < MAX_REPLICAS and (s.starting, s.stopping) == (0, 0),
            90,
            "scale in and drain under light traffic",
        )
        light_end = time.monotonic() - load.started
        records = load.close()

    timeline.wait_until(settled(MIN_REPLICAS), 60, "return to min_replicas after the load")
    assert max(s.running for s in timeline.samples) == MAX_REPLICAS
    assert all(s.running <= MAX_REPLICAS for s in timeline.samples)

    # TTFT recovers: requests sent at max replicas wait far less than with one replica.
    one_replica = median_ttft(records, 0.0, scaled_out.at)
    at_max_replicas = median_ttft(records, busy_end - SECONDS_AT_MAX, busy_end)
    assert at_max_replicas < 0.7 * one_replica, (one_replica, at_max_replicas)

    # Scale-in under traffic: every request sent, before or during it, completed in full.
    during_scale_in = [r for r in records if busy_end <= r.sent_at < light_end]
    assert len(during_scale_in) >= LIGHT_CLIENTS
    failed = [r.record.error for r in records if r.record.error is not None]
    assert failed == []
    assert all(len(r.record.content_times) > 0 for r in records)
    assert all(r.record.completion_tokens == 48 for r in records)


def test_a_replica_that_dies_mid_stream_ends_it_with_a_retryable_error(
    autoscaling_url: str,
) -> None:
    """Past the drain timeout (or on a crash) a stream ends with a 503 error event."""
    timeline = Timeline(since=time.monotonic())
    timeline.wait_until(settled(MIN_REPLICAS), 120, "settle at min_replicas")
    body = {"model": MODEL, "prompt": "count", "max_tokens": 3000, "ignore_eos": True}
    with httpx.stream(
        "POST", f"{autoscaling_url}/v1/completions", json=body | {"stream": True}, timeout=60
    ) as stream:
        events = stream.iter_lines()
        assert next(line for line in events if line.startswith("data: "))
        (replica,) = live_replica_actors()
        ray.kill(replica, no_restart=True)
        rest = []
        for line in events:  # read up to [DONE], as OpenAI clients do
            if line.startswith("data: "):
                rest.append(line.removeprefix("data: "))
            if rest and rest[-1] == "[DONE]":
                break

    assert rest[-1] == "[DONE]"
    error = json.loads(rest[-2])["error"]
    assert error["type"] == "service_unavailable"
    assert "retry" in error["message"]
    timeline.wait_until(settled(MIN_REPLICAS), 120, "replace the replica")
    response = httpx.post(
        f"{autoscaling_url}/v1/completions", json=body | {"max_tokens": 4}, timeout=60
    )
    assert response.status_code == 200, response.text
