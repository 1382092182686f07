"""Tensor-parallel ranks beyond 0 as Ray actors in their replica's own placement group.

Serve creates the replica (rank 0) in bundle 0 of a ``STRICT_PACK`` placement group of one
bundle per rank; rank r runs in bundle r, so a replica's ranks always share one node. The
actors belong to the replica: when Serve stops it, they go with it.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future
from pathlib import Path

import ray
from ray.actor import ActorHandle
from ray.util import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from prism.config import ReplicaResources
from prism.engine import EngineConfig
from prism.engine.local_ranks import run_rank
from prism.engine.parallel import ParallelSetup
from prism.errors import RankLost

logger = logging.getLogger(__name__)


def rank_bundle(resources: ReplicaResources) -> dict[str, float]:
    """One rank's placement group bundle (Ray refuses zero-valued entries)."""
    bundle = {"CPU": resources.num_cpus, "GPU": resources.num_gpus}
    return {name: amount for name, amount in bundle.items() if amount > 0}


RANK_ACTOR_PREFIX = "PRISM_RANK::"


def rank_actor_name(replica_id: str, rank: int) -> str:
    """The Ray actor name of a replica's rank (as the dashboard and ``ray list actors`` show)."""
    return f"{RANK_ACTOR_PREFIX}{replica_id}#{rank}"


class TensorParallelRank:
    """A Ray actor hosting one rank; its :meth:`run` call lasts as long as the rank."""

    def run(self, model_path: str, config: EngineConfig, setup: ParallelSetup) -> None:
        run_rank(model_path, config, setup)

    def where(self) -> dict[str, str | int | None]:
        """This rank's node, process and placement group (answered while :meth:`run` runs)."""
        context = ray.get_runtime_context()
        return {
            "node_id": context.get_node_id(),
            "pid": os.getpid(),
            "placement_group_id": context.get_placement_group_id(),
        }


class RayRanks:
    """Starts ranks 1..N-1 in bundles 1..N-1 of the calling replica's placement group."""

    def __init__(self, resources: ReplicaResources, replica_id: str) -> None:
        self.resources = resources
        self.replica_id = replica_id
        self._actors: list[ActorHandle] = []
        self._lost: str | None = None
        self._stopping = False

    def start(self, model_path: Path, config: EngineConfig) -> ParallelSetup:
        group = get_current_placement_group()
        if group is None:
            raise RuntimeError("a tensor-parallel replica must run in a placement group")
        setup = ParallelSetup.for_rank0(config.tensor_parallel_size, ray.util.get_node_ip_address())
        rank_actor = ray.remote(TensorParallelRank)
        for rank in range(1, setup.world_size):
            options = rank_actor.options(
                name=rank_actor_name(self.replica_id, rank),
                max_concurrency=2,
                num_cpus=self.resources.num_cpus,
                num_gpus=self.resources.num_gpus,
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=rank
                ),
            )
            actor: ActorHandle = options.remote()  # pyright: ignore[reportAssignmentType]
            running = actor.run.remote(str(model_path), config, setup.for_rank(rank))
            running.future().add_done_callback(lambda done, rank=rank: self._ended(rank, done))
            self._actors.append(actor)
        return setup

    def check(self) -> None:
        if self._lost is not None and not self._stopping:
            raise RankLost(self._lost)

    def stop(self) -> None:
        self._stopping = True
        for actor in self._actors:
            ray.kill(actor)

    def _ended(self, rank: int, done: Future) -> None:
        error = done.exception()
        reason = f"died: {type(error).__name__}" if error is not None else "stopped"
        self._lost = self._lost or f"tensor-parallel rank {rank} {reason}"
        if not self._stopping:
            logger.error("%s", self._lost, exc_info=error)
