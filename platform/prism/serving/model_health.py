"""Each model's health as the ingress reports it: how many of its replicas are live.

Serve's controller counts every deployment's replicas by state; an ingress replica asks it
(``serve.status()``, on a thread of its own) every :data:`REFRESH_PERIOD_S`, and again when
a health check finds the last count older than :data:`MAX_AGE_S`. gRPC health checks and
``/health`` read the count; the ``prism_model_live_replicas`` gauge reports it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.schema import ServeStatus

from prism.serving.metrics import ModelHealthMetrics

logger = logging.getLogger(__name__)

REFRESH_PERIOD_S = 5.0
"""How often the gauge is refreshed: as often as Serve checks a replica's health."""
MAX_AGE_S = 1.0
"""The oldest count a health check answers from."""
STATUS_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ModelHealth:
    """A model and its live replicas (running, as Serve's controller counts them)."""

    id: str
    live_replicas: int

    @property
    def available(self) -> bool:
        return self.live_replicas > 0


def running_replicas(status: ServeStatus, app: str, deployment_name: str) -> int:
    """The running replicas of an application's deployment in ``status`` (0: none known)."""
    application = status.applications.get(app)
    deployment = application.deployments.get(deployment_name) if application else None
    # Typed by ReplicaState (a str enum) but keyed by the plain names when they arrive here.
    counts = cast("dict[str, int]", deployment.replica_states) if deployment else {}
    return counts.get("RUNNING", 0)


def health_report(models: list[ModelHealth]) -> tuple[int, dict[str, Any]]:
    """``/health``'s status code and body: 200 while any model is available, else 503.

    The body's ``status`` is ``ok`` (every model available), ``degraded`` or ``unavailable``
    (none is); each model has its ``status`` and ``live_replicas``.
    """
    available = [model.available for model in models]
    status = "unavailable" if not any(available) else "ok" if all(available) else "degraded"
    body = {
        "status": status,
        "models": [
            {
                "id": model.id,
                "status": "available" if model.available else "unavailable",
                "live_replicas": model.live_replicas,
            }
            for model in models
        ],
    }
    return 503 if status == "unavailable" else 200, body


class ModelMonitor:
    """The models' live replicas as last counted (none counted yet: 0 each)."""

    def __init__(self, handles: Mapping[str, DeploymentHandle]) -> None:
        self._deployments = {
            model_id: (handle.app_name, handle.deployment_name)
            for model_id, handle in handles.items()
        }
        self._models = {model_id: ModelHealth(model_id, 0) for model_id in handles}
        self._counted_at = -math.inf
        self._counting: asyncio.Future[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._metrics = ModelHealthMetrics()
        # One thread: a controller that never answers holds it, not the loop's default pool.
        self._status_thread = ThreadPoolExecutor(1, thread_name_prefix="prism-serve-status")

    async def current(self) -> dict[str, ModelHealth]:
        """Each model's health by id, counted again first if the count is over
        :data:`MAX_AGE_S` old."""
        if time.monotonic() - self._counted_at > MAX_AGE_S:
            await self.count()
        return self._models

    async def count(self) -> None:
        """Count the live replicas now (callers at the same time share one count)."""
        if self._counting is None or self._counting.done():
            self._counting = asyncio.ensure_future(self._count())
        await asyncio.shield(self._counting)

    def start(self) -> None:
        """Count now and every :data:`REFRESH_PERIOD_S`, so the gauge stays current unprobed."""
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            await self.count()
            await asyncio.sleep(REFRESH_PERIOD_S)

    async def _count(self) -> None:
        """Ask Serve's controller; if it does not answer, keep the last count (logged)."""
        loop = asyncio.get_running_loop()
        try:
            status = await asyncio.wait_for(
                loop.run_in_executor(self._status_thread, serve.status), STATUS_TIMEOUT_S
            )
        except Exception as error:
            logger.warning("model health kept: Serve's status failed: %r", error)
        else:
            self._models = {
                model_id: ModelHealth(model_id, running_replicas(status, *deployment))
                for model_id, deployment in self._deployments.items()
            }
            for model in self._models.values():
                self._metrics.observe(model.id, model.live_replicas)
        self._counted_at = time.monotonic()
