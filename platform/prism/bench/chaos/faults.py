"""The faults the chaos benchmark injects, and the schedule that injects them.

Each injector is a blocking call that returns what it hit. The schedule runs them on worker
threads, so the load on the event loop goes on while a replica dies or Redis restarts, and
lets each wait for the platform only while the load lasts: a fault that could strike only
after it is not injected. Needs a connected Ray driver and the running platform.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import ray
from ray.serve._private.constants import SERVE_NAMESPACE
from ray.serve.handle import DeploymentHandle

from prism.bench.chaos.replicas import (
    replica_actor_names,
    wait_for_replicas,
)
from prism.bench.chaos.results import FAULT_NAMES, FaultEvent, FaultKind
from prism.redis_server import EmbeddedRedis

Inject = Callable[[float], str | None]
"""Injects one fault, waiting for the platform at most the seconds given, and names what it
hit; raises when it cannot."""


def replica_killer(app: str, deployment: str, replicas: int, rng: random.Random) -> Inject:
    """Kill a replica actor of ``deployment``, drawn at random; Serve starts another.

    It first waits for all ``replicas`` to run, so kills never pile up: with two replicas,
    the second is not killed while the first is still coming back.
    """

    def kill(wait_s: float) -> str:
        running = wait_for_replicas(app, deployment, replicas, wait_s)
        if running < replicas:
            raise RuntimeError(f"only {running} of {replicas} replicas ran in time")
        name = rng.choice(replica_actor_names(app, deployment))
        ray.kill(ray.get_actor(name, namespace=SERVE_NAMESPACE), no_restart=True)
        return name.rpartition("#")[2]  # the replica id

    return kill


def redis_restarter(server: EmbeddedRedis) -> Inject:
    """Restart the embedded Redis index: its keys are gone, its address stays."""

    def restart(_: float) -> str:
        server.restart()
        return f"{server.host}:{server.port}"

    return restart


def step_faulter(handle: DeploymentHandle) -> Inject:
    """Make the next engine step of one replica (Serve picks it) raise."""

    def fault(wait_s: float) -> None:
        handle.inject_step_fault.remote().result(timeout_s=wait_s)

    return fault


async def _inject_on_schedule(
    kind: FaultKind,
    times: list[float],
    inject: Inject,
    end: float,
    now: Callable[[], float],
    progress: Callable[[str], None],
) -> list[FaultEvent]:
    events = []
    for at in times:
        await asyncio.sleep(max(0.0, at - now()))
        began = now()
        if began >= end:  # an earlier fault of the kind waited past the load
            break
        target, error = None, None
        try:
            target = await asyncio.to_thread(inject, max(0.0, end - began))
        except Exception as failure:  # recorded in the report: the load goes on without it
            error = f"{type(failure).__name__}: {failure}"
        struck = now()
        events.append(FaultEvent(kind, struck, struck - began, target, error))
        outcome = f"not injected: {error}" if error else f"on {target}" if target else "done"
        progress(f"{struck:6.1f} s: {FAULT_NAMES[kind]} {outcome}")
    return events


async def run_faults(
    schedule: dict[FaultKind, tuple[list[float], Inject]],
    end: float,
    now: Callable[[], float],
    progress: Callable[[str], None],
) -> list[FaultEvent]:
    """Inject each kind of fault at its times, until ``end`` (seconds on ``now``'s clock);
    every fault, in order."""
    runs = await asyncio.gather(
        *(
            _inject_on_schedule(kind, times, inject, end, now, progress)
            for kind, (times, inject) in schedule.items()
        )
    )
    return sorted((event for events in runs for event in events), key=lambda event: event.at)
