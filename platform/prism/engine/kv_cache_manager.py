"""Which KV blocks each request holds: prefix hits, growth and release.

On a model whose every layer slides one attention window, a request gives back the blocks
that lie wholly before the window of its next token as it advances, so a long sequence holds
about ``window / block_size + 1`` blocks. Its block table keeps their places, as
:data:`~prism.engine.request.RELEASED_BLOCK`, so that it stays indexable by position; the
blocks keep their hashes on the pool's free list like any freed block. A prefix hit on such
a model holds only the cached blocks inside the window of its first new token, so it needs
those blocks cached, not the ones before them. Models with any global layer release
nothing before the request ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from prism.engine.block_pool import BlockPool
from prism.engine.request import RELEASED_BLOCK, Request


def blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


@dataclass(frozen=True, slots=True)
class PrefixHit:
    """A request's leading ``num_blocks`` blocks, found computed in the cache.

    ``block_ids`` are the last of them, the ones the request must hold; the blocks before
    lie outside the window of its first new token.
    """

    num_blocks: int = 0
    block_ids: tuple[int, ...] = ()

    @property
    def num_skipped(self) -> int:
        return self.num_blocks - len(self.block_ids)


NO_HIT = PrefixHit()


class KVCacheManager:
    """Maps requests to blocks of the :class:`BlockPool`.

    ``window``: the attention window every layer of the model slides (None if any layer
    attends to the whole sequence); blocks before it are released while a request runs.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool,
        window: int | None = None,
    ) -> None:
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.window = window

    def first_needed_block(self, position: int) -> int:
        """The first block the token at ``position`` (or any later one) attends to."""
        if self.window is None:
            return 0
        return max(0, position - self.window + 1) // self.block_size

    def peak_blocks(self, num_tokens: int, max_chunk: int) -> int:
        """The most blocks one request of ``num_tokens`` tokens holds at once, computed in
        chunks of at most ``max_chunk`` tokens."""
        whole = blocks_for(num_tokens, self.block_size)
        if self.window is None:
            return whole
        # A chunk's first query reaches ``window - 1`` keys back, from any offset in a block.
        span = self.window - 1 + max_chunk + self.block_size - 1
        return min(whole, blocks_for(span, self.block_size))

    def cached_prefix(self, request: Request) -> PrefixHit:
        """The longest run of the request's leading blocks the cache can resume from.

        Hashes chain from the first block, so a cached block stands for its whole prefix: a
        hit needs only the blocks the first new token attends to. The last token is always
        recomputed, so a fully cached sequence still has one token to run (its logits are
        needed to sample).
        """
        if not self.enable_prefix_caching:
            return NO_HIT
        max_blocks = (request.num_tokens - 1) // self.block_size
        found: list[int | None] = []
        run_start = num_blocks = 0  # the current run of cached blocks; the best hit so far
        for index, block_hash in enumerate(request.block_hashes[:max_blocks]):
            found.append(self.pool.lookup(block_hash))
            if found[-1] is None:
                if self.window is None:
                    break
                run_start = index + 1
            elif run_start <= self.first_needed_block((index + 1) * self.block_size):
                num_blocks = index + 1
        first = self.first_needed_block(num_blocks * self.block_size)
        held = found[first:num_blocks]
        return PrefixHit(num_blocks, tuple(block for block in held if block is not None))

    def allocate(self, request: Request, num_new_tokens: int, hit: PrefixHit = NO_HIT) -> bool:
        """Give the request blocks for ``num_new_tokens`` more tokens (after ``hit``, a prefix
        hit of a request that holds no blocks yet).

        Returns False, changing nothing, when the pool cannot supply them.
        """
        table_len = len(request.block_ids) + hit.num_blocks
        total_tokens = request.num_computed_tokens + hit.num_blocks * self.block_size
        needed = blocks_for(total_tokens + num_new_tokens, self.block_size) - table_len
        revived = sum(1 for block_id in hit.block_ids if self.pool.ref_count(block_id) == 0)
        if max(needed, 0) + revived > self.pool.num_free:
            return False
        if hit.num_blocks:
            self.pool.acquire(list(hit.block_ids))
            request.block_ids.extend([RELEASED_BLOCK] * hit.num_skipped + list(hit.block_ids))
            request.num_released_blocks = hit.num_skipped
            request.num_computed_tokens = total_tokens
            request.num_registered_blocks = table_len
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

    def release_outside_window(self, request: Request) -> None:
        """Give back the blocks before the window of the request's next token (register
        them first, so they stay cached)."""
        start = request.num_released_blocks
        end = self.first_needed_block(request.num_computed_tokens)
        if end > start:
            self.pool.release(request.block_ids[start:end])
            request.block_ids[start:end] = [RELEASED_BLOCK] * (end - start)
            request.num_released_blocks = end

    def free(self, request: Request) -> None:
        """Release every block the request holds."""
        self.pool.release(request.held_block_ids)
        request.block_ids = []
        request.num_registered_blocks = 0
        request.num_released_blocks = 0
