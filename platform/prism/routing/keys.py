"""Names of the Redis keys of one model's prefix index.

Every key of a model carries the same hash tag (``{model id}``), so one Lua script can read
them all on Redis Cluster too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IndexKeys:
    """The key names of one model's index under a deployment-wide prefix."""

    prefix: str
    model_id: str

    @property
    def _base(self) -> str:
        return f"{self.prefix}:{{{self.model_id}}}"

    @property
    def live(self) -> str:
        """Sorted set: replica id → the (Redis) time its liveness expires."""
        return f"{self._base}:live"

    def blocks(self, replica_id: str) -> str:
        """Set of the block hashes the replica's engine reports cached."""
        return f"{self._base}:blocks:{replica_id}"

    def predicted(self, replica_id: str) -> str:
        """Sorted set: block hash → expiry, for requests routed there but not yet reported."""
        return f"{self._base}:predicted:{replica_id}"
