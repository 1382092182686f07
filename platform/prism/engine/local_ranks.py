"""The tensor-parallel ranks beyond 0: what each one runs and how rank 0 starts them.

Rank 0 is the engine itself. A :class:`RankLauncher` starts the others wherever they should
live: :class:`LocalRanks` as child processes here; Prism's Serve replicas use Ray actors in
the replica's placement group (``prism.serving.rank_actors``).
"""

from __future__ import annotations

import logging
import multiprocessing
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Protocol

from prism.engine.engine_config import EngineConfig
from prism.engine.model_runner import ModelRunner
from prism.engine.parallel import ParallelSetup
from prism.errors import RankLost
from prism.models import ModelConfig

logger = logging.getLogger(__name__)


class RankLauncher(Protocol):
    """Starts, watches and stops the ranks 1..N-1 of one engine."""

    def start(self, model_path: Path, config: EngineConfig) -> ParallelSetup:
        """Start the ranks (they join rank 0 in the background); return rank 0's setup."""
        ...

    def check(self) -> None:
        """Raise :class:`RankLost` if a rank has died."""
        ...

    def stop(self) -> None:
        """Make sure every rank is gone."""
        ...


def run_rank(model_path: str, config: EngineConfig, setup: ParallelSetup) -> None:
    """Be rank ``setup.rank``: load this rank's shard, then follow rank 0's steps until it stops."""
    path = Path(model_path)
    runner = ModelRunner(ModelConfig.from_folder(path), path, config, setup)
    logger.info("tensor-parallel rank %d of %d ready", setup.rank, setup.world_size)
    try:
        runner.follow()
    finally:
        runner.close()


class LocalRanks:
    """Ranks beyond 0 as child processes of this one (engines used without Ray)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._processes: list[BaseProcess] = []

    def start(self, model_path: Path, config: EngineConfig) -> ParallelSetup:
        setup = ParallelSetup.for_rank0(config.tensor_parallel_size, self.host)
        context = multiprocessing.get_context("spawn")
        for rank in range(1, setup.world_size):
            process = context.Process(
                target=run_rank,
                args=(str(model_path), config, setup.for_rank(rank)),
                name=f"prism-rank-{rank}",
                daemon=True,
            )
            process.start()
            self._processes.append(process)
        return setup

    def check(self) -> None:
        for rank, process in enumerate(self._processes, start=1):
            if process.exitcode is not None:
                raise RankLost(f"tensor-parallel rank {rank} exited (code {process.exitcode})")

    def stop(self, timeout: float = 10.0) -> None:
        for process in self._processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join()
