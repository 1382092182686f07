"""Which blocks each request holds: prefix lookup, growth, registration and release."""

from __future__ import annotations

from prism.engine.kv_cache_manager import NO_HIT, KVCacheManager, PrefixHit
from prism.kv_events import BlocksStored
from support.engine_requests import BLOCK_SIZE, cached_request, compute, engine_request


def make_kv(num_blocks: int, enable_prefix_caching: bool = True) -> KVCacheManager:
    return KVCacheManager(num_blocks, BLOCK_SIZE, enable_prefix_caching)


def test_the_block_table_grows_only_when_a_token_starts_a_new_block() -> None:
    kv = make_kv(8)
    request = engine_request("r", list(range(5)))
    compute(kv, request, 5)
    sizes = [len(request.block_ids)]
    for _ in range(4):
        request.append_token(1)
        compute(kv, request, 1)
        sizes.append(len(request.block_ids))

    assert sizes == [2, 2, 2, 2, 3]  # tokens 5..9: the ninth needs a third block
    assert kv.pool.num_free == 5


def test_an_allocation_the_pool_cannot_supply_changes_nothing() -> None:
    kv = make_kv(2)
    request = engine_request("r", list(range(12)))

    assert not kv.allocate(request, 12)
    assert request.block_ids == [] and kv.pool.num_free == 2


def test_only_complete_blocks_are_registered_and_each_once() -> None:
    kv = make_kv(8)
    request = engine_request("r", list(range(10)))
    compute(kv, request, 6)
    compute(kv, request, 4)
    assert request.num_registered_blocks == 2
    request.append_token(1)
    request.append_token(2)
    compute(kv, request, 2)

    stored = [
        h for e in kv.pool.drain_events() if isinstance(e, BlocksStored) for h in e.block_hashes
    ]
    assert stored == request.block_hashes and len(stored) == 3
    assert [kv.pool.lookup(h) for h in stored] == request.block_ids


def test_a_prompt_finds_the_leading_blocks_another_request_left_cached() -> None:
    kv = make_kv(8)
    done = cached_request(kv, list(range(12)))
    assert done.block_ids == [] and kv.pool.num_free == 8

    sharing = engine_request("sharing", [*range(8), 90, 91, 92, 93])
    other = engine_request("other", [99, *range(1, 12)])
    first_two = tuple(kv.pool.lookup(h) for h in done.block_hashes[:2])
    assert kv.cached_prefix(sharing) == PrefixHit(2, first_two)
    assert kv.cached_prefix(other) == NO_HIT


def test_a_fully_cached_prompt_still_computes_its_last_block() -> None:
    kv = make_kv(8)
    done = cached_request(kv, list(range(12)))
    again = engine_request("again", list(range(12)))

    leading = tuple(kv.pool.lookup(h) for h in done.block_hashes[:2])
    assert kv.cached_prefix(again) == PrefixHit(2, leading)


def test_without_prefix_caching_nothing_is_registered_or_found() -> None:
    kv = make_kv(8, enable_prefix_caching=False)
    done = cached_request(kv, list(range(12)))

    assert kv.pool.lookup(done.block_hashes[0]) is None
    assert kv.cached_prefix(engine_request("again", list(range(12)))) == NO_HIT


def test_cached_blocks_are_shared_and_revived_from_the_free_pool() -> None:
    kv = make_kv(4)
    cached_request(kv, list(range(8)))
    first = engine_request("first", list(range(12)))
    second = engine_request("second", list(range(12)))

    hit = kv.cached_prefix(first)
    assert kv.allocate(first, 4, hit)  # two cached free blocks revived, one new
    assert first.block_ids[:2] == list(hit.block_ids) and first.num_computed_tokens == 8
    assert kv.allocate(second, 4, kv.cached_prefix(second))  # shared, one more new block
    assert [kv.pool.ref_count(block) for block in hit.block_ids] == [2, 2]
    assert kv.pool.num_free == 0


def test_reviving_cached_blocks_counts_against_the_free_pool() -> None:
    kv = make_kv(3)
    cached_request(kv, list(range(8)))
    longer = engine_request("longer", list(range(16)))
    hit = kv.cached_prefix(longer)

    assert len(hit.block_ids) == 2 and kv.pool.num_free == 3
    assert not kv.allocate(longer, 8, hit)  # 2 revived + 2 new > 3 free
    assert longer.block_ids == [] and longer.num_computed_tokens == 0
    assert [kv.pool.ref_count(block) for block in hit.block_ids] == [0, 0]
