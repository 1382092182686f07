"""The pool of fixed-size KV blocks: reference counts, the hash map and the free list."""

from __future__ import annotations

from collections import OrderedDict

from prism.hashing import BlockHash
from prism.kv_events import AllBlocksCleared, BlocksRemoved, BlocksStored, KVEvent


class BlockPool:
    """Owns every KV block of the cache.

    A block whose reference count drops to zero goes on the free list but keeps its hash, so
    a later request with the same prefix can take it back. The free list is in eviction
    order: blocks without a hash first, then cached blocks least recently freed first.
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._ref_counts = [0] * num_blocks
        self._hashes: list[BlockHash | None] = [None] * num_blocks
        self._by_hash: dict[BlockHash, int] = {}
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._events: list[KVEvent] = []

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests (cached free blocks count as free)."""
        return 1.0 - len(self._free) / self.num_blocks

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    def lookup(self, block_hash: BlockHash) -> int | None:
        """The cached block holding ``block_hash``, if any."""
        return self._by_hash.get(block_hash)

    def allocate(self, count: int) -> list[int]:
        """Take ``count`` blocks off the free list, evicting their cached contents."""
        if count > len(self._free):
            raise RuntimeError(f"asked for {count} KV blocks, {len(self._free)} free")
        blocks: list[int] = []
        evicted: list[BlockHash] = []
        for _ in range(count):
            block_id, _ = self._free.popitem(last=False)
            old_hash = self._hashes[block_id]
            if old_hash is not None:
                del self._by_hash[old_hash]
                self._hashes[block_id] = None
                evicted.append(old_hash)
            self._ref_counts[block_id] = 1
            blocks.append(block_id)
        if evicted:
            self._events.append(BlocksRemoved(tuple(evicted)))
        return blocks

    def acquire(self, block_ids: list[int]) -> None:
        """Take another reference on cached blocks (a prefix hit)."""
        for block_id in block_ids:
            if self._ref_counts[block_id] == 0:
                del self._free[block_id]
            self._ref_counts[block_id] += 1

    def release(self, block_ids: list[int]) -> None:
        """Drop one reference on each block; a sequence's tail is freed (and evicted) first."""
        for block_id in reversed(block_ids):
            self._ref_counts[block_id] -= 1
            if self._ref_counts[block_id] == 0:
                self._free[block_id] = None
                if self._hashes[block_id] is None:
                    self._free.move_to_end(block_id, last=False)

    def register(self, block_ids: list[int], block_hashes: list[BlockHash]) -> None:
        """Make full, computed blocks findable by hash (a hash already cached is skipped)."""
        stored: list[BlockHash] = []
        for block_id, block_hash in zip(block_ids, block_hashes, strict=True):
            if block_hash in self._by_hash or self._hashes[block_id] is not None:
                continue
            self._by_hash[block_hash] = block_id
            self._hashes[block_id] = block_hash
            stored.append(block_hash)
        if stored:
            self._events.append(BlocksStored(tuple(stored)))

    def clear_cache(self) -> None:
        """Forget every cached hash (blocks in use keep their contents)."""
        self._by_hash.clear()
        self._hashes = [None] * self.num_blocks
        self._events.append(AllBlocksCleared())

    def cached_hashes(self) -> list[BlockHash]:
        """Every hash currently cached, for re-publishing the full set."""
        return list(self._by_hash)

    def drain_events(self) -> list[KVEvent]:
        events, self._events = self._events, []
        return events
