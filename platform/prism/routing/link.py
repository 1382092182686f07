"""The router's connection to the prefix index: bounded waits and a cooldown after failures.

The index is an optimisation: when Redis is down or slow the router routes by load alone,
counts it, and skips Redis for a pause that grows from :data:`FIRST_BACKOFF_S` to
:data:`~prism.routing.connection.MAX_BACKOFF_S` (:class:`~prism.routing.connection.Cooldown`).
No request waits on a dead Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from prism.hashing import BlockHash
from prism.routing.connection import INDEX_ERRORS, Cooldown, backoff, open_redis
from prism.routing.index import PrefixIndex
from prism.routing.keys import IndexKeys

logger = logging.getLogger(__name__)

Answer = TypeVar("Answer")

FIRST_BACKOFF_S = 0.5
"""How long the router skips Redis after one failure; each failure in a row doubles it."""
RECONNECT_RETRIES = 1
"""A query whose pooled connection Redis had closed (a restart) reconnects once, at once."""


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
        self.cooldown = Cooldown(backoff(FIRST_BACKOFF_S), clock)
        self._index: PrefixIndex | None = None

    @property
    def available(self) -> bool:
        """Whether a query would be tried now (a URL is set and no cooldown is running)."""
        return self.url is not None and self.cooldown.ready

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
        if self.url is None or not self.cooldown.ready:
            return None
        if self._index is None:  # created lazily: it binds to the running loop
            redis = open_redis(self.url, self.password, self.timeout_s, RECONNECT_RETRIES)
            self._index = PrefixIndex(redis, self.keys)
        try:
            result = await asyncio.wait_for(query(self._index), self.timeout_s)
        except INDEX_ERRORS as error:
            self.on_error()
            pause = self.cooldown.failed()
            logger.warning(
                "prefix index unavailable (%r); routing by load for %.1f s", error, pause
            )
            return None
        self.cooldown.succeeded()
        return result
