"""The ``LLMServer`` deployment: one engine per replica, streaming outputs to the ingress."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ray import serve

from prism.autoscaling.signals import DEFAULT_WINDOW_S, RecentRequests, autoscaling_stats
from prism.config import ModelSettings, RedisSettings
from prism.engine import AsyncEngine, EngineConfig, LLMEngine
from prism.routing.publisher import EngineFeed, KVEventPublisher
from prism.serving.messages import GenerateChunk, GenerateRequest
from prism.serving.metrics import EngineMetrics
from prism.serving.rank_actors import RayRanks

logger = logging.getLogger(__name__)

STATS_PERIOD_S = 1.0


@dataclass(slots=True)
class _RequestClock:
    """Arrival and token times of one request, for its latency metrics."""

    arrival: float
    first_token: float | None = None
    last_token: float | None = None
    output_tokens: int = 0

    @property
    def ttft(self) -> float | None:
        """Seconds from arrival to the first token (None before it)."""
        return None if self.first_token is None else self.first_token - self.arrival

    def tick(self, num_tokens: int, gaps: list[float], now: float) -> None:
        if num_tokens and self.first_token is None:
            self.first_token = now
        elif num_tokens and self.last_token is not None:
            gaps.append(now - self.last_token)
        if num_tokens:
            self.last_token = now
            self.output_tokens += num_tokens


def _warm_up(engine: LLMEngine, replica_id: str) -> None:
    """Warm ``engine`` up, logging how long it took; a failure closes it (and its ranks)."""
    started = time.monotonic()
    try:
        engine.warm_up()
    except BaseException:
        engine.close()
        raise
    logger.info("replica %s warmed up in %.2f s", replica_id, time.monotonic() - started)


class LLMServer:
    """Hosts an :class:`AsyncEngine` for one model (a Serve deployment class).

    With ``engine.warmup`` on, the engine runs :meth:`LLMEngine.warm_up` before the replica
    is ready (Serve counts a replica ready once ``__init__`` returns), and before the KV event
    publisher and the metrics start, so neither the router's index nor the metrics see it.
    """

    async def __init__(self, model: ModelSettings, index: RedisSettings) -> None:
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        config = EngineConfig(**model.engine.model_dump())
        ranks = None
        if config.tensor_parallel_size > 1:
            ranks = RayRanks(model.resources, self.replica_id)
        engine = LLMEngine.from_source(model.source, config, model.id, ranks)
        if config.warmup:
            _warm_up(engine, self.replica_id)
        self.model_id = model.id
        self.engine = AsyncEngine(engine, model.max_queued_requests)
        self.metrics = EngineMetrics(model.id)
        self.recent = RecentRequests(
            model.autoscaling.look_back_s if model.autoscaling else DEFAULT_WINDOW_S
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._export_stats())]
        if index.url is not None:
            feed = EngineFeed(self.engine.drain_events, self.engine.cached_block_hashes)
            publisher = KVEventPublisher.connect(index, model.id, self.replica_id, feed)
            self._tasks.append(loop.create_task(publisher.run()))
        logger.info(
            "replica %s serves %s (prefix index: %s)",
            self.replica_id,
            model.id,
            "on" if index.url else "off",
        )

    async def _export_stats(self) -> None:
        while True:
            self.metrics.observe_stats(self.engine.stats())
            await asyncio.sleep(STATS_PERIOD_S)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        """Stream the request's outputs; a cancelled call aborts it and frees its blocks."""
        clock = _RequestClock(time.monotonic())
        self.recent.arrived(request.request_id, clock.arrival)
        gaps: list[float] = []
        logger.info(
            "request %s: %d prompt tokens", request.request_id, len(request.prompt_token_ids)
        )
        try:
            async for output in self.engine.generate(
                request.prompt_token_ids, request.params, request.request_id, request.cache_salt
            ):
                now = time.monotonic()
                had_token = clock.first_token is not None
                clock.tick(len(output.new_token_ids), gaps, now)
                self.recent.produced(request.request_id, len(output.new_token_ids), now)
                yield GenerateChunk(output, self.replica_id, None if had_token else clock.ttft)
        finally:
            self.recent.left(request.request_id)
            self.metrics.observe_request(
                len(request.prompt_token_ids),
                clock.output_tokens,
                clock.ttft,
                gaps,
                time.monotonic() - clock.arrival,
            )
            logger.info(
                "request %s: done, %d output tokens", request.request_id, clock.output_tokens
            )

    def stats(self) -> dict:
        """The engine's current stats, as a plain dict, with this replica's id."""
        stats = self.engine.stats()
        values = {name: getattr(stats, name) for name in stats.__slots__}
        return values | {"replica_id": self.replica_id}

    def inject_step_fault(self) -> None:
        """Fail the engine's next step that has work, as a real fault would (chaos tests).

        Raises :class:`~prism.errors.InvalidRequest` unless the engine's ``fault_injection``
        setting is on.
        """
        self.engine.inject_step_fault()

    def record_routing_stats(self) -> dict:
        """The load the router weighs (Serve polls it every ``router.stats_period_s``)."""
        stats = self.engine.stats()
        return {
            "running": stats.num_running,
            "waiting": stats.num_waiting,
            "kv_usage": stats.kv_cache_usage,
        }

    def record_autoscaling_stats(self) -> dict[str, float]:
        """The load :mod:`prism.autoscaling` sizes the fleet by (Serve calls this periodically)."""
        return autoscaling_stats(self.engine.stats(), self.recent, time.monotonic())

    def check_health(self) -> None:
        """Serve's health probe: fails once the engine loop or a tensor-parallel rank died."""
        self.engine.check_health()

    def __del__(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.engine.shutdown()
