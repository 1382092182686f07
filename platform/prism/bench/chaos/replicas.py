"""The model deployment's replicas: waiting for all of them, and their actors.

Needs a connected Ray driver. Counts come from ``serve.status()``; actors from the cluster's
actor table (which needs no dashboard).
"""

from __future__ import annotations

import time

from prism.bench.autoscale.replica_watch import live_replica_actors, sample_replicas

POLL_PERIOD_S = 0.2


def wait_for_replicas(app: str, deployment: str, target: int, timeout_s: float) -> int:
    """Wait until ``deployment`` runs ``target`` replicas and starts or stops none; returns
    how many run then (fewer if ``timeout_s`` passed first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        sample = sample_replicas(app, deployment, 0.0)
        steady = sample.starting == 0 and sample.stopping == 0
        if (steady and sample.running >= target) or time.monotonic() > deadline:
            return sample.running
        time.sleep(POLL_PERIOD_S)


def replica_actor_names(app: str, deployment: str) -> list[str]:
    """The names of ``deployment``'s live replica actors, sorted."""
    return sorted(actor["Name"] for actor in live_replica_actors(app, deployment))
