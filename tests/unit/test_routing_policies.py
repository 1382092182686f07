"""Replica ranking, the load-only policies and routing hints (pure functions, no Ray)."""

from __future__ import annotations

import random

from prism.hashing import block_hashes, cache_namespace
from prism.kv_events import AllBlocksCleared, BlocksRemoved, BlocksStored, KVEventsDropped
from prism.routing.hint import RoutingHint
from prism.routing.policies import RoundRobin, session_order, two_random
from prism.routing.publisher import BlockChanges
from prism.routing.scoring import CostModel, ReplicaLoad

COSTS = CostModel(load_cost_tokens=100.0, imbalance_threshold=4, kv_usage_threshold=0.9)


def ranked_ids(prompt_tokens: int, *loads: ReplicaLoad, seed: int = 0) -> list[str]:
    return [load.replica_id for load in COSTS.rank(prompt_tokens, loads, random.Random(seed))]


def test_the_replica_holding_the_prefix_wins() -> None:
    order = ranked_ids(
        1000, ReplicaLoad("a", 0, 0), ReplicaLoad("b", 800, 1), ReplicaLoad("c", 400, 0)
    )
    assert order == ["b", "c", "a"]


def test_load_outweighs_a_small_cached_run() -> None:
    assert ranked_ids(1000, ReplicaLoad("a", 0, 0), ReplicaLoad("b", 160, 2))[0] == "a"


def test_the_imbalance_guard_moves_a_hot_prefix_elsewhere() -> None:
    order = ranked_ids(5000, ReplicaLoad("hot", 4900, 4), ReplicaLoad("idle", 0, 0))
    assert order == ["idle", "hot"]


def test_a_replica_with_a_full_kv_cache_comes_last() -> None:
    order = ranked_ids(1000, ReplicaLoad("full", 900, 0, 0.97), ReplicaLoad("free", 0, 1, 0.2))
    assert order == ["free", "full"]


def test_equal_costs_are_broken_at_random() -> None:
    tied = [ReplicaLoad(name, 0, 0) for name in "abc"]
    firsts = {ranked_ids(100, *tied, seed=seed)[0] for seed in range(50)}
    assert firsts == {"a", "b", "c"}


def test_round_robin_cycles_through_sorted_replicas() -> None:
    rotation = RoundRobin()
    firsts = [rotation.order(["c", "a", "b"])[0] for _ in range(4)]
    assert firsts == ["a", "b", "c", "a"]


def test_session_order_is_stable_and_moves_few_sessions() -> None:
    replicas = [f"r{index}" for index in range(4)]
    homes = {f"s{n}": session_order(f"s{n}", replicas)[0] for n in range(200)}
    assert homes == {f"s{n}": session_order(f"s{n}", replicas[::-1])[0] for n in range(200)}
    assert len(set(homes.values())) == 4
    without_r0 = {s: session_order(s, replicas[1:])[0] for s in homes}
    moved = {s for s in homes if homes[s] != without_r0[s]}
    assert moved == {s for s, home in homes.items() if home == "r0"}


def test_two_random_picks_distinct_candidates() -> None:
    rng = random.Random(3)
    for _ in range(20):
        first, second = two_random(["a", "b", "c"], rng)
        assert first != second
    assert two_random(["only"], rng) == ["only"]


def test_hint_hashes_like_the_engine_and_caps_cached_tokens() -> None:
    prompt = list(range(40))
    hint = RoutingHint.for_prompt(prompt, "m", 16, cache_salt="tenant")
    assert hint.block_hashes == block_hashes(prompt, 16, cache_namespace("m", "tenant"))
    assert len(hint.block_hashes) == 2
    assert hint.cached_tokens(1) == 16
    assert hint.cached_tokens(2) == 32
    exact = RoutingHint.for_prompt(list(range(32)), "m", 16)
    assert exact.cached_tokens(2) == 31  # the last prompt token is always recomputed


def test_block_changes_keep_the_last_word_on_each_hash() -> None:
    changes = BlockChanges.of(
        [
            BlocksStored((b"a", b"b")),
            BlocksRemoved((b"a",)),
            AllBlocksCleared(),
            BlocksStored((b"c", b"d")),
            BlocksRemoved((b"d",)),
        ]
    )
    assert changes.cleared
    assert changes.added == [b"c"]
    assert changes.removed == [b"d"]
    assert not changes.resync
    assert BlockChanges.of([KVEventsDropped()]).resync
    assert not BlockChanges.of([])
