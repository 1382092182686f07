"""How many replicas a deployment has, in which states, and on which Ray nodes.

Needs a connected Ray driver (``ray.init``). Counts come from ``serve.status()``; nodes from
the cluster's actor table (which needs no dashboard).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from ray import serve
from ray._private import state


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    """One look at a deployment: seconds since the watch began, counts by state, nodes."""

    at: float
    running: int
    starting: int
    stopping: int
    nodes: tuple[str, ...]
    """The node of each live replica actor (running or stopping), sorted."""


def live_replica_actors(app: str, deployment: str) -> list[dict]:
    """The live replica actors of ``deployment``, as the cluster's actor table lists them.

    A replica's actor is named ``SERVE_REPLICA::<app>#<deployment>#<replica id>``.
    """
    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return [
        actor
        for actor in state.actors(actor_state_name="ALIVE").values()
        if (actor.get("Name") or "").startswith(prefix)
    ]


def replica_nodes(app: str, deployment: str) -> tuple[str, ...]:
    """The Ray node id of each live replica actor of ``deployment``."""
    return tuple(
        sorted(actor["Address"]["NodeID"] for actor in live_replica_actors(app, deployment))
    )


def sample_replicas(app: str, deployment: str, since: float) -> ReplicaSample:
    """Count ``deployment``'s replicas by state now (``since``: the ``time.monotonic`` zero)."""
    at = time.monotonic() - since
    application = serve.status().applications.get(app)
    status = application.deployments.get(deployment) if application else None
    # Typed by ReplicaState (a str enum) but keyed by the plain names when they arrive here.
    counts = cast("dict[str, int]", status.replica_states) if status else {}
    return ReplicaSample(
        at=at,
        running=counts.get("RUNNING", 0),
        starting=counts.get("STARTING", 0) + counts.get("RECOVERING", 0),
        stopping=counts.get("STOPPING", 0),
        nodes=replica_nodes(app, deployment),
    )
