"""Block pool bookkeeping: references, the cached free list and eviction order."""

from __future__ import annotations

import pytest

from prism.engine.block_pool import BlockPool
from prism.kv_events import AllBlocksCleared, BlocksRemoved, BlocksStored


def test_allocate_and_release_track_free_blocks() -> None:
    pool = BlockPool(4)
    blocks = pool.allocate(3)
    assert pool.num_free == 1 and pool.usage == pytest.approx(0.75)
    pool.release(blocks)
    assert pool.num_free == 4 and pool.usage == 0.0
    with pytest.raises(RuntimeError):
        pool.allocate(5)


def test_cached_free_block_can_be_taken_back_by_hash() -> None:
    pool = BlockPool(4)
    [block] = pool.allocate(1)
    pool.register([block], [b"h1"])
    pool.release([block])
    assert pool.lookup(b"h1") == block and pool.num_free == 4

    pool.acquire([block])
    assert pool.ref_count(block) == 1 and pool.num_free == 3
    assert pool.drain_events() == [BlocksStored((b"h1",))]


def test_uncached_blocks_are_reused_before_cached_ones() -> None:
    pool = BlockPool(3)
    cached, plain = pool.allocate(2)
    pool.register([cached], [b"keep"])
    pool.release([cached, plain])
    pool.allocate(2)  # the untouched block and the uncached one go first
    assert pool.lookup(b"keep") == cached
    pool.allocate(1)
    assert pool.lookup(b"keep") is None
    assert BlocksRemoved((b"keep",)) in pool.drain_events()


def test_a_sequence_tail_is_evicted_before_its_head() -> None:
    pool = BlockPool(2)
    head, tail = pool.allocate(2)
    pool.register([head, tail], [b"head", b"tail"])
    pool.release([head, tail])
    pool.allocate(1)
    assert pool.lookup(b"head") == head and pool.lookup(b"tail") is None


def test_a_hash_already_cached_is_not_registered_twice() -> None:
    pool = BlockPool(2)
    first, second = pool.allocate(2)
    pool.register([first], [b"same"])
    pool.register([second], [b"same"])
    assert pool.lookup(b"same") == first
    pool.release([second])
    assert pool.num_free == 1


def test_clear_cache_forgets_every_hash() -> None:
    pool = BlockPool(2)
    blocks = pool.allocate(2)
    pool.register(blocks, [b"a", b"b"])
    pool.clear_cache()
    assert pool.lookup(b"a") is None and pool.cached_hashes() == []
    assert pool.drain_events()[-1] == AllBlocksCleared()
