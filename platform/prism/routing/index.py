"""The router's side of the prefix index: which replicas hold a prompt's leading blocks."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from prism.hashing import BlockHash
from prism.routing import scripts
from prism.routing.keys import IndexKeys

NOT_LIVE = -1
"""A replica without a live heartbeat in the index (new, dead, or never published)."""


class PrefixIndex:
    """Reads the cluster-wide prefix index and records predicted entries."""

    def __init__(self, redis: Redis, keys: IndexKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._match = redis.register_script(scripts.MATCH)
        self._predict = redis.register_script(scripts.PREDICT)

    async def leading_blocks(
        self, replica_ids: Sequence[str], block_hashes: Sequence[BlockHash]
    ) -> dict[str, int]:
        """Per replica, how many leading ``block_hashes`` it holds (:data:`NOT_LIVE` if dead)."""
        if not replica_ids:
            return {}
        keys = [self.keys.live]
        for replica_id in replica_ids:
            keys += [self.keys.blocks(replica_id), self.keys.predicted(replica_id)]
        runs = await self._match(keys=keys, args=[len(replica_ids), *replica_ids, *block_hashes])
        return dict(zip(replica_ids, (int(run) for run in runs), strict=True))

    async def predict(
        self, replica_id: str, block_hashes: Sequence[BlockHash], ttl_s: float
    ) -> None:
        """Count ``block_hashes`` as held by the replica for ``ttl_s`` seconds."""
        if block_hashes:
            await self._predict(keys=[self.keys.predicted(replica_id)], args=[ttl_s, *block_hashes])
