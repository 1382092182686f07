"""Which KV blocks each request holds: prefix hits, growth and release."""

from __future__ import annotations

from collections.abc import Sequence

from prism.engine.block_pool import BlockPool
from prism.engine.request import Request


def blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


class KVCacheManager:
    """Maps requests to blocks of the :class:`BlockPool`."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool) -> None:
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching

    def cached_prefix(self, request: Request) -> list[int]:
        """Cached blocks matching the request's leading full blocks.

        The last token is always recomputed, so a fully cached sequence still has one token
        to run (its logits are needed to sample).
        """
        if not self.enable_prefix_caching:
            return []
        max_blocks = (request.num_tokens - 1) // self.block_size
        blocks: list[int] = []
        for block_hash in request.block_hashes[:max_blocks]:
            block_id = self.pool.lookup(block_hash)
            if block_id is None:
                break
            blocks.append(block_id)
        return blocks

    def allocate(self, request: Request, num_new_tokens: int, cached: Sequence[int] = ()) -> bool:
        """Give the request blocks for ``num_new_tokens`` more tokens (after ``cached``).

        Returns False, changing nothing, when the pool cannot supply them.
        """
        held = len(request.block_ids) + len(cached)
        total_tokens = request.num_computed_tokens + len(cached) * self.block_size
        needed = blocks_for(total_tokens + num_new_tokens, self.block_size) - held
        revived = sum(1 for block_id in cached if self.pool.ref_count(block_id) == 0)
        if max(needed, 0) + revived > self.pool.num_free:
            return False
        if cached:
            self.pool.acquire(list(cached))
            request.block_ids.extend(cached)
            request.num_computed_tokens = total_tokens
            request.num_registered_blocks = len(request.block_ids)
        if needed > 0:
            request.block_ids.extend(self.pool.allocate(needed))
        return True

    def register_computed(self, request: Request) -> None:
        """Cache every block the request has completely computed."""
        if not self.enable_prefix_caching:
            return
        num_full = request.num_computed_tokens // self.block_size
        start = request.num_registered_blocks
        if num_full > start:
            self.pool.register(
                request.block_ids[start:num_full], request.block_hashes[start:num_full]
            )
            request.num_registered_blocks = num_full

    def free(self, request: Request) -> None:
        """Release every block the request holds."""
        self.pool.release(request.block_ids)
        request.block_ids = []
        request.num_registered_blocks = 0
