"""The KV check after the load: every replica idle, and the blocks they still hold.

Needs a connected Ray driver and the running platform. Each ``stats`` call reaches one
replica (Serve picks it), so the check calls until it has heard from each of them.
"""

from __future__ import annotations

import time
from typing import Any

from ray.exceptions import RayError
from ray.serve.handle import DeploymentHandle

from prism.bench.chaos.replicas import POLL_PERIOD_S
from prism.bench.chaos.results import KVCheck, ReplicaKV

STATS_TIMEOUT_S = 10.0


def _replica_kv(stats: dict[str, Any]) -> ReplicaKV:
    return ReplicaKV(
        replica_id=stats["replica_id"],
        used_blocks=stats["num_kv_blocks"] - stats["num_free_kv_blocks"],
        running=stats["num_running"],
        waiting=stats["num_waiting"],
    )


def check_kv_blocks(handle: DeploymentHandle, expected: int, timeout_s: float) -> KVCheck:
    """Call ``stats`` until ``expected`` replicas were each last seen idle with no block in
    use, or ``timeout_s`` passed; the check holds each replica's last answer."""
    latest: dict[str, ReplicaKV] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            replica = _replica_kv(handle.stats.remote().result(timeout_s=STATS_TIMEOUT_S))
            latest[replica.replica_id] = replica
        except (RayError, TimeoutError):
            pass  # a replica on its way up or down: ask again
        check = KVCheck(expected, sorted(latest.values(), key=lambda kv: kv.replica_id))
        if (check.settled and check.leaked_blocks == 0) or time.monotonic() > deadline:
            return check
        time.sleep(POLL_PERIOD_S)
