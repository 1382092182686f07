"""Load-only replica choices: power of two, round robin and session affinity."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Sequence
from typing import TypeVar

Item = TypeVar("Item")


def two_random(candidates: Sequence[Item], rng: random.Random) -> list[Item]:
    """Two distinct candidates at random (one if there is one), for power of two choices."""
    return rng.sample(list(candidates), min(2, len(candidates)))


class RoundRobin:
    """Each call starts one further along the candidates (sorted, so routers agree)."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def order(self, replica_ids: Sequence[str]) -> list[str]:
        ordered = sorted(replica_ids)
        if not ordered:
            return []
        start = next(self._counter) % len(ordered)
        return ordered[start:] + ordered[:start]


def session_order(session_id: str, replica_ids: Sequence[str]) -> list[str]:
    """Replicas in rendezvous-hash order for a session: the first is its home replica.

    Adding or removing a replica moves only the sessions whose home it was.
    """

    def weight(replica_id: str) -> bytes:
        key = f"{session_id}\x00{replica_id}".encode()
        return hashlib.blake2b(key, digest_size=8).digest()

    return sorted(replica_ids, key=weight, reverse=True)
