"""The router's connection to the prefix index: bounded waits and a backoff after failures.

The index is an optimisation: when Redis is down or slow the router routes by load alone,
counts it, and tries Redis again after a growing pause. No request waits on a dead Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.asyncio import Redis

from prism.hashing import BlockHash
from prism.routing.index import PrefixIndex
from prism.routing.keys import IndexKeys
from prism.routing.publisher import INDEX_ERRORS

logger = logging.getLogger(__name__)

Answer = TypeVar("Answer")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0


class IndexLink:
    """A :class:`PrefixIndex` that answers ``None`` instead of failing or stalling."""

    def __init__(
        self,
        url: str | None,
        keys: IndexKeys,
        timeout_s: float,
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        password: str | None = None,
    ) -> None:
        self.url = url
        self.password = password
        self.keys = keys
        self.timeout_s = timeout_s
        self.on_error = on_error
        self.clock = clock
        self._index: PrefixIndex | None = None
        self._retry_at = 0.0
        self._backoff = FIRST_BACKOFF_S

    @property
    def available(self) -> bool:
        """Whether a query would be tried now (a URL is set and no backoff is running)."""
        return self.url is not None and self.clock() >= self._retry_at

    async def leading_blocks(
        self, replica_ids: Sequence[str], block_hashes: Sequence[BlockHash]
    ) -> dict[str, int] | None:
        """Per-replica leading blocks, or ``None`` when the index cannot answer in time."""
        return await self._call(lambda index: index.leading_blocks(replica_ids, block_hashes))

    async def predict(
        self, replica_id: str, block_hashes: Sequence[BlockHash], ttl_s: float
    ) -> None:
        """Record predicted entries; a failure only counts against the index."""
        await self._call(lambda index: index.predict(replica_id, block_hashes, ttl_s))

    async def _call(self, query: Callable[[PrefixIndex], Awaitable[Answer]]) -> Answer | None:
        if not self.available:
            return None
        if self._index is None:  # created lazily: it binds to the running loop
            redis = Redis.from_url(
                self.url,
                password=self.password,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
            )
            self._index = PrefixIndex(redis, self.keys)
        try:
            result = await asyncio.wait_for(query(self._index), self.timeout_s)
        except INDEX_ERRORS as error:
            self.on_error()
            self._retry_at = self.clock() + self._backoff
            logger.warning(
                "prefix index unavailable (%r); routing by load for %.1f s", error, self._backoff
            )
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            return None
        self._backoff = FIRST_BACKOFF_S
        return result
