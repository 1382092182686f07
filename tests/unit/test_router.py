"""``PrismRouter`` ranking replicas under each policy, with a real Redis index and no Ray."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, RequestMetadata
from ray.serve.request_router import PendingRequest, ReplicaID
from redis.asyncio import Redis

from prism.hashing import BlockHash
from prism.redis_server import EmbeddedRedis, free_port
from prism.routing.hint import RoutingHint
from prism.routing.keys import IndexKeys
from prism.routing.policies import session_order
from prism.routing.publisher import EngineFeed, KVEventPublisher
from prism.routing.router import PrismRouter
from prism.sampling_params import SamplingParams
from prism.serving.messages import GenerateRequest

MODEL = "tiny"
BLOCK_SIZE = 16
PROMPT = list(range(200))  # 12 full blocks
DEPLOYMENT = DeploymentID(name="LLMServer:tiny", app_name="prism")


@dataclass
class Replica:
    """What the router reads of Serve's ``RunningReplica`` (a real one needs a Ray actor)."""

    replica_id: ReplicaID
    routing_stats: dict[str, float] = field(default_factory=dict)


def replica(name: str, **stats: float) -> Replica:
    return Replica(ReplicaID(name, DEPLOYMENT), dict(stats))


@pytest.fixture(scope="module")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


def make_router(
    policy: str, redis_url: str | None = None, key_prefix: str = "prism"
) -> PrismRouter:
    router = PrismRouter(DEPLOYMENT, DeploymentHandleSource.UNKNOWN)
    router.initialize_state(
        MODEL, {"policy": policy}, {"url": redis_url, "key_prefix": key_prefix, "timeout_s": 1.0}
    )
    return router


def generate_call(hint: RoutingHint | None) -> PendingRequest:
    """A pending ``generate`` call as Serve hands it to the router (in a running loop)."""
    request = GenerateRequest("r", PROMPT, SamplingParams(), routing=hint)
    metadata = RequestMetadata(request_id="r", internal_request_id=uuid.uuid4().hex)
    return PendingRequest(args=[request], kwargs={}, metadata=metadata)


def prompt_hint(session_id: str | None = None) -> RoutingHint:
    return RoutingHint.for_prompt(PROMPT, MODEL, BLOCK_SIZE, session_id=session_id)


async def rank(
    router: PrismRouter, candidates: list[Replica], hint: RoutingHint | None
) -> list[list[str]]:
    pending = None if hint is None else generate_call(hint)
    ranks = await router.choose_replicas(candidates, pending)
    return [[choice.replica_id.unique_id for choice in group] for group in ranks]


@dataclass
class Index:
    """One model's prefix index in the real Redis, under keys of its own."""

    url: str
    keys: IndexKeys

    def router(self, policy: str = "prefix") -> PrismRouter:
        return make_router(policy, self.url, self.keys.prefix)

    async def publish(self, replica_id: str, held: list[BlockHash]) -> None:
        """The replica's publisher writes its cached blocks and heartbeat, as on startup."""

        async def snapshot() -> list[BlockHash]:
            return held

        async with Redis.from_url(self.url) as redis:
            feed = EngineFeed(list, snapshot)
            await KVEventPublisher(redis, self.keys, replica_id, feed, 30.0, 1.0).sync_all()

    async def wait_for_predicted(self, replica_id: str, count: int, timeout: float = 5.0):
        """Wait until ``count`` blocks are predicted on the replica."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with Redis.from_url(self.url) as redis:
            while await redis.zcard(self.keys.predicted(replica_id)) < count:
                assert loop.time() < deadline, "no prediction was written"
                await asyncio.sleep(0.01)


@pytest.fixture
def index(redis_server: EmbeddedRedis) -> Index:
    return Index(redis_server.url, IndexKeys(f"router-{uuid.uuid4().hex[:8]}", MODEL))


def test_prefix_ranks_by_cached_run_and_predicts_what_it_routes(index: Index) -> None:
    hashes = prompt_hint().block_hashes
    candidates = [replica("a"), replica("b"), replica("c")]
    router = index.router()

    async def main() -> tuple[list[list[str]], RoutingHint, list[list[str]]]:
        for name, held in (("a", []), ("b", hashes[:8]), ("c", hashes[:2])):
            await index.publish(name, held)
        hint = prompt_hint()
        first = await rank(router, candidates, hint)
        router.on_request_routed(generate_call(hint), candidates[2].replica_id, None)
        await index.wait_for_predicted("c", count=len(hashes) - 2)
        return first, hint, await rank(router, candidates, prompt_hint())

    first, hint, second = asyncio.run(main())

    assert first == [["b"], ["c"], ["a"]]
    assert (hint.policy, hint.replica_runs) == ("prefix", {"a": 0, "b": 8, "c": 2})
    assert hint.predicted_cached_tokens == 2 * BLOCK_SIZE
    assert second == [["c"], ["b"], ["a"]]  # c now holds every block, predicted


def test_reported_load_outweighs_a_short_cached_run(index: Index) -> None:
    router = index.router()
    busy, idle = replica("busy", running=2, waiting=1), replica("idle")

    async def main() -> list[list[str]]:
        await index.publish("busy", prompt_hint().block_hashes[:4])
        await index.publish("idle", [])
        return await rank(router, [busy, idle], prompt_hint())

    assert asyncio.run(main()) == [["idle"], ["busy"]]  # 64 cached tokens < 3 requests' cost


def test_without_its_index_the_prefix_policy_ranks_by_load_and_predicts_nothing() -> None:
    router = make_router("prefix", f"redis://127.0.0.1:{free_port()}/0")
    candidates = [replica("busy", running=1), replica("idle")]
    hint = prompt_hint()

    async def main() -> list[list[str]]:
        ranks = await rank(router, candidates, hint)
        router.on_request_routed(generate_call(hint), candidates[1].replica_id, None)
        return ranks

    assert asyncio.run(main()) == [["idle"], ["busy"]]
    assert hint.replica_runs is None and hint.predicted_cached_tokens is None


def test_pow2_offers_two_distinct_random_replicas_in_one_rank() -> None:
    router = make_router("pow2")
    candidates = [replica(name) for name in "abc"]
    hint = prompt_hint()

    ranks = [asyncio.run(rank(router, candidates, hint)) for _ in range(30)]

    assert all(len(groups) == 1 and len(set(groups[0])) == 2 for groups in ranks)
    assert {name for groups in ranks for name in groups[0]} == {"a", "b", "c"}
    assert hint.policy == "pow2"


def test_calls_without_a_hint_are_routed_by_pow2_whatever_the_policy() -> None:
    router = make_router("round_robin")
    ranks = asyncio.run(rank(router, [replica("a"), replica("b"), replica("c")], None))
    assert len(ranks) == 1 and len(set(ranks[0])) == 2


def test_round_robin_starts_each_call_one_replica_further() -> None:
    router = make_router("round_robin")
    candidates = [replica(name) for name in "cab"]

    ranks = [asyncio.run(rank(router, candidates, prompt_hint())) for _ in range(4)]

    assert ranks == [
        [["a"], ["b"], ["c"]],
        [["b"], ["c"], ["a"]],
        [["c"], ["a"], ["b"]],
        [["a"], ["b"], ["c"]],
    ]


def test_session_keeps_a_session_on_its_home_replica() -> None:
    router = make_router("session")
    names = [f"r{index}" for index in range(4)]
    candidates = [replica(name) for name in names]
    hint = prompt_hint(session_id="alice")

    ranks = asyncio.run(rank(router, candidates, hint))
    reordered = asyncio.run(rank(router, candidates[::-1], prompt_hint(session_id="alice")))
    without_session = asyncio.run(rank(router, candidates, prompt_hint()))

    assert ranks == reordered == [[name] for name in session_order("alice", names)]
    assert hint.policy == "session"
    assert len(without_session) == 1 and len(without_session[0]) == 2  # no session: pow2


@pytest.mark.parametrize("policy", ["prefix", "pow2", "round_robin", "session"])
def test_no_candidates_give_no_ranks(policy: str) -> None:
    router = make_router(policy)
    assert asyncio.run(rank(router, [], prompt_hint(session_id="s"))) == []
