"""Prefix-aware routing through Serve: three tiny replicas, two ingresses, a real Redis."""

from __future__ import annotations

import random
import time

import httpx
import ray
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve._private.constants import SERVE_NAMESPACE

from support.metrics import metric_samples, metric_value, scrape_metrics
from support.routing_platform import (
    ROUTING_APP,
    TINY_MODEL_ID,
    RoutingPlatform,
    prompt_hashes,
    random_tokens,
)

PREFIX_TOKENS = 256


def test_engine_and_router_hash_blocks_identically(routing_platform: RoutingPlatform) -> None:
    prompt = random_tokens(100, random.Random(1))

    served = routing_platform.complete(prompt)

    hashes = prompt_hashes(prompt)
    assert len(hashes) == 100 // 16
    routing_platform.wait_until_indexed(served.replica, hashes)


def test_requests_sharing_a_prefix_go_to_the_replica_holding_it(
    routing_platform: RoutingPlatform,
) -> None:
    rng = random.Random(2)
    prefix, holder = seed_prefix(routing_platform, rng)

    followers = [routing_platform.complete(prefix + random_tokens(20, rng)) for _ in range(10)]

    assert {follower.replica for follower in followers} == {holder}
    assert all(follower.cached_tokens >= PREFIX_TOKENS for follower in followers)
    assert all(follower.predicted_cached_tokens >= PREFIX_TOKENS for follower in followers)


def test_two_ingress_routers_send_a_prefix_to_the_same_replica(
    routing_platform: RoutingPlatform,
) -> None:
    rng = random.Random(3)
    prefix, holder = seed_prefix(routing_platform, rng)
    before = routers_with_hits(routing_platform)

    followers = [routing_platform.complete(prefix + random_tokens(20, rng)) for _ in range(12)]

    assert {follower.replica for follower in followers} == {holder}
    deadline = time.monotonic() + 30
    while True:  # both ingress replicas' routers must have placed some of them by cache hit
        grew = {
            router
            for router, hits in routers_with_hits(routing_platform).items()
            if hits > before.get(router, 0)
        }
        if len(grew) == 2:
            break
        assert time.monotonic() < deadline, f"only {grew} routed the followers"
        time.sleep(1)


def test_after_eviction_the_old_holder_is_no_longer_favoured(
    routing_platform: RoutingPlatform,
) -> None:
    rng = random.Random(4)
    prefix, holder = seed_prefix(routing_platform, rng)
    hashes = prompt_hashes(prefix)

    for _ in range(60):  # long unique prompts push the prefix out of the holder's cache
        routing_platform.complete(random_tokens(700, rng))
        if hashes[0] not in routing_platform.replica_blocks(holder):
            break
    else:
        raise AssertionError("the holder never evicted the prefix")
    time.sleep(routing_platform.config.router.predicted_ttl_s)  # let predictions lapse

    again = routing_platform.complete(prefix + random_tokens(20, rng))
    assert again.predicted_cached_tokens == 0
    assert again.cached_tokens == 0


def test_redis_outage_routes_by_load_and_recovers(routing_platform: RoutingPlatform) -> None:
    rng = random.Random(5)
    prefix, holder = seed_prefix(routing_platform, rng)
    fallbacks_before = decisions(routing_platform, "fallback")

    routing_platform.redis_server.stop()
    try:
        during = [routing_platform.complete(prefix + random_tokens(20, rng)) for _ in range(8)]
    finally:
        routing_platform.redis_server.start()

    assert all(completion.predicted_cached_tokens is None for completion in during)
    deadline = time.monotonic() + 30
    while decisions(routing_platform, "fallback") < fallbacks_before + len(during):
        assert time.monotonic() < deadline, "the fallback decisions were not counted"
        time.sleep(1)
    recovered_by = time.monotonic() + 30
    while True:  # the replicas republish their blocks and the routers reconnect
        after = routing_platform.complete(prefix + random_tokens(20, rng))
        if after.replica == holder and (after.predicted_cached_tokens or 0) >= PREFIX_TOKENS:
            break
        assert time.monotonic() < recovered_by, "prefix hits did not recover within 30 s"
        time.sleep(0.5)
    assert after.cached_tokens >= PREFIX_TOKENS


def test_a_killed_replica_stops_attracting_its_prefixes(routing_platform: RoutingPlatform) -> None:
    rng = random.Random(6)
    prefix, holder = seed_prefix(routing_platform, rng)

    ray.kill(replica_actor(holder), no_restart=True)

    served = []
    deadline = time.monotonic() + 60
    while len(served) < 4:  # requests in flight at the kill may fail; later ones must not
        try:
            served.append(routing_platform.complete(prefix + random_tokens(20, rng)).replica)
        except httpx.HTTPStatusError:
            assert not served, "a request failed after others had succeeded"
            assert time.monotonic() < deadline, "no replica served the prefix after the kill"
            time.sleep(0.5)
    assert holder not in served
    with routing_platform.redis() as client:
        deadline = time.monotonic() + 10
        while client.exists(routing_platform.keys.blocks(holder)):
            assert time.monotonic() < deadline, "the dead replica's blocks never expired"
            time.sleep(0.2)


def seed_prefix(routing_platform: RoutingPlatform, rng: random.Random) -> tuple[list[int], str]:
    """A new prefix, sent once and published by the replica that served it (its holder)."""
    prefix = random_tokens(PREFIX_TOKENS, rng)
    holder = routing_platform.complete(prefix + random_tokens(20, rng)).replica
    routing_platform.wait_until_indexed(holder, prompt_hashes(prefix))
    return prefix, holder


def routers_with_hits(routing_platform: RoutingPlatform) -> dict[str, float]:
    """Cache-hit decisions so far, per ingress replica (each runs its own router)."""
    text = scrape_metrics(routing_platform.metrics_urls)
    samples = metric_samples(
        text, "ray_prism_router_decisions_total", application=ROUTING_APP, outcome="hit"
    )
    return {labels["replica"]: value for labels, value in samples}


def decisions(routing_platform: RoutingPlatform, outcome: str) -> float:
    text = scrape_metrics(routing_platform.metrics_urls)
    name = "ray_prism_router_decisions_total"
    return metric_value(text, name, application=ROUTING_APP, outcome=outcome) or 0.0


def replica_actor(replica_id: str) -> ray.actor.ActorHandle:
    """The Ray actor of a model replica of the routing application."""
    deployment = DeploymentID(name=f"LLMServer:{TINY_MODEL_ID}", app_name=ROUTING_APP)
    name = ReplicaID(replica_id, deployment).to_full_id_str()
    return ray.get_actor(name, namespace=SERVE_NAMESPACE)
