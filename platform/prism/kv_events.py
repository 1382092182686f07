"""Small typed records of what the KV cache gained or lost, for the prefix index."""

from __future__ import annotations

from dataclasses import dataclass

from prism.hashing import BlockHash


@dataclass(frozen=True, slots=True)
class BlocksStored:
    """Full blocks whose K/V are now cached and can be reused by hash."""

    block_hashes: tuple[BlockHash, ...]


@dataclass(frozen=True, slots=True)
class BlocksRemoved:
    """Cached blocks that were evicted and no longer serve prefix hits."""

    block_hashes: tuple[BlockHash, ...]


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    """The whole prefix cache was dropped."""


@dataclass(frozen=True, slots=True)
class KVEventsDropped:
    """Events were dropped because nobody drained them: re-read the full set of hashes."""


KVEvent = BlocksStored | BlocksRemoved | AllBlocksCleared | KVEventsDropped
