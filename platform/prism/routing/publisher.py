"""A replica's side of the prefix index: its engine's KV events, batched into Redis.

The publisher runs as a task on the replica's event loop, off the engine's step loop. It
writes the full set of cached hashes when it starts, when Redis comes back after an error,
and when its heartbeat finds its entry gone (Redis restarted or flushed); in between it
sends the changes. Redis errors never reach requests: a redis-py ``Retry`` calls each round
again after a back-off (:mod:`prism.routing.connection`), and the round after an error
starts with a full resync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from prism.config import RedisSettings
from prism.hashing import BlockHash
from prism.kv_events import (
    AllBlocksCleared,
    BlocksRemoved,
    BlocksStored,
    KVEvent,
    KVEventsDropped,
)
from prism.routing import scripts
from prism.routing.connection import backoff, open_redis, retry_forever
from prism.routing.keys import IndexKeys

logger = logging.getLogger(__name__)

SYNC_CHUNK = 2048
TIMEOUT_S = 2.0
"""The longest a publisher's connect or reply may take before it counts as an error."""


@dataclass(slots=True)
class BlockChanges:
    """The net effect of a run of KV events on one replica's block set."""

    cleared: bool = False
    stored: dict[BlockHash, bool] = field(default_factory=dict)
    resync: bool = False

    @classmethod
    def of(cls, events: Iterable[KVEvent]) -> BlockChanges:
        """Fold events, oldest first, into what to delete, add and remove."""
        changes = cls()
        for event in events:
            if isinstance(event, BlocksStored):
                changes.stored.update(dict.fromkeys(event.block_hashes, True))
            elif isinstance(event, BlocksRemoved):
                changes.stored.update(dict.fromkeys(event.block_hashes, False))
            elif isinstance(event, AllBlocksCleared):
                changes.cleared = True
                changes.stored.clear()
            elif isinstance(event, KVEventsDropped):
                changes.resync = True
        return changes

    @property
    def added(self) -> list[BlockHash]:
        return [block for block, held in self.stored.items() if held]

    @property
    def removed(self) -> list[BlockHash]:
        return [block for block, held in self.stored.items() if not held]

    def __bool__(self) -> bool:
        return self.cleared or self.resync or bool(self.stored)


@dataclass(slots=True)
class EngineFeed:
    """What the publisher needs of an engine: its events and a consistent snapshot."""

    drain_events: Callable[[], list[KVEvent]]
    cached_block_hashes: Callable[[], Awaitable[list[BlockHash]]]


class KVEventPublisher:
    """Keeps one replica's block set and heartbeat in the Redis index current.

    A replica that stops (or dies) stops its heartbeat: routers stop counting it once its
    liveness expires, and its block set expires with it.
    """

    @classmethod
    def connect(
        cls, settings: RedisSettings, model_id: str, replica_id: str, feed: EngineFeed
    ) -> KVEventPublisher:
        """A publisher for ``settings.url`` (which must be set)."""
        assert settings.url is not None
        # No retries per command: every error leads to a full resync (see run).
        redis = open_redis(settings.url, settings.password(), TIMEOUT_S)
        return cls(
            redis,
            IndexKeys(settings.key_prefix, model_id),
            replica_id,
            feed,
            settings.liveness_ttl_s,
            settings.publish_interval_s,
        )

    def __init__(
        self,
        redis: Redis,
        keys: IndexKeys,
        replica_id: str,
        feed: EngineFeed,
        liveness_ttl_s: float,
        interval_s: float,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.replica_id = replica_id
        self.feed = feed
        self.liveness_ttl_s = liveness_ttl_s
        self.interval_s = interval_s
        self.heartbeat_every_s = liveness_ttl_s / 4
        self.full_syncs = 0
        self.pauses = backoff(interval_s)
        """Pauses after errors in a row: ``interval_s``, doubling up to ``MAX_BACKOFF_S`` (5 s)."""
        self._retry = retry_forever(self.pauses)
        self._heartbeat = redis.register_script(scripts.HEARTBEAT)
        self._needs_sync = True
        self._next_heartbeat = 0.0

    async def run(self) -> None:
        """Publish until cancelled; Redis errors are logged, backed off and resynced."""
        while True:
            await self._retry.call_with_retry(
                self._publish_round, self._round_failed, with_failure_count=True
            )
            await asyncio.sleep(self.interval_s)

    async def _publish_round(self) -> None:
        """A full resync if one is due, the changes, and the heartbeat when it is time."""
        loop = asyncio.get_running_loop()
        if self._needs_sync:
            await self.sync_all()
            self._next_heartbeat = loop.time() + self.heartbeat_every_s
        await self.publish_changes()
        if loop.time() >= self._next_heartbeat:
            await self.heartbeat()
            self._next_heartbeat = loop.time() + self.heartbeat_every_s

    async def _round_failed(self, error: Exception, failures: int) -> None:
        """Called by the retry before its pause: what Redis holds can no longer be trusted."""
        self._needs_sync = True
        logger.warning(
            "prefix index unreachable (%r); retrying in %.2f s",
            error,
            self.pauses.compute(failures),
        )

    async def sync_all(self) -> None:
        """Replace the replica's block set with the engine's current one."""
        hashes = await self.feed.cached_block_hashes()
        blocks = self.keys.blocks(self.replica_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(blocks)
            for start in range(0, len(hashes), SYNC_CHUNK):
                pipe.sadd(blocks, *hashes[start : start + SYNC_CHUNK])
            await pipe.execute()
        await self._beat()
        self._needs_sync = False
        self.full_syncs += 1
        logger.info("published %d cached blocks to the prefix index", len(hashes))

    async def publish_changes(self) -> None:
        """Send the net effect of the engine's events since the last call."""
        changes = BlockChanges.of(self.feed.drain_events())
        if changes.resync:
            await self.sync_all()
            return
        if not changes:
            return
        blocks = self.keys.blocks(self.replica_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            if changes.cleared:
                pipe.delete(blocks)
            removed, added = changes.removed, changes.added
            if removed:
                pipe.srem(blocks, *removed)
            if added:
                pipe.sadd(blocks, *added)
            pipe.pexpire(blocks, int(self.liveness_ttl_s * 1000))
            await pipe.execute()

    async def heartbeat(self) -> None:
        """Extend the replica's liveness; resync if its entry had expired or vanished."""
        if not await self._beat():
            logger.info("the prefix index lost this replica's entry; publishing again")
            await self.sync_all()

    async def _beat(self) -> bool:
        keys = [self.keys.live, self.keys.blocks(self.replica_id)]
        return bool(await self._heartbeat(keys=keys, args=[self.replica_id, self.liveness_ttl_s]))
