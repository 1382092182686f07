"""The chaos benchmark: streaming load while replicas die, Redis restarts and steps fail.

Ray and the platform start from a profile, for its first model, with the engine's fault
hook on. Closed-loop clients stream for the duration and close a share of their requests
early; meanwhile each kind of fault strikes on its own schedule. Then the bench waits for
every replica to be back and idle and counts the KV blocks they still hold.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime

import torch
from openai import AsyncOpenAI
from ray import serve
from ray.serve.handle import DeploymentHandle

from prism.bench.chaos.client import ChaosClient
from prism.bench.chaos.faults import (
    Inject,
    redis_restarter,
    replica_killer,
    run_faults,
    step_faulter,
)
from prism.bench.chaos.kv_check import check_kv_blocks
from prism.bench.chaos.load import run_load
from prism.bench.chaos.outcomes import LedgerEntry
from prism.bench.chaos.replicas import wait_for_replicas
from prism.bench.chaos.results import ChaosResult, FaultEvent, FaultKind
from prism.bench.chaos.settings import ChaosSettings, fault_times
from prism.bench.machine import describe_machine
from prism.bench.serve.load import NO_API_KEY
from prism.bench.serve.prompts import conversations
from prism.config import ConfigError, ModelSettings, PlatformConfig
from prism.launcher import Endpoints, start_platform
from prism.serving.app import APP_NAME, deployment_name
from prism.serving.ingress import read_api_key

Schedule = dict[FaultKind, tuple[list[float], Inject]]


def _with_fault_hook(config: PlatformConfig) -> tuple[PlatformConfig, ModelSettings]:
    """The config of the first model alone, its engine's fault injection on."""
    model = config.models[0]
    engine = model.engine.model_copy(update={"fault_injection": True})
    model = model.model_copy(update={"engine": engine})
    return config.model_copy(update={"models": [model]}), model


def _schedule(
    settings: ChaosSettings,
    endpoints: Endpoints,
    handle: DeploymentHandle,
    deployment: str,
    replicas: int,
) -> Schedule:
    """Each fault kind turned on, with its times and its injector."""
    rng = random.Random(settings.seed)
    kill = replica_killer(APP_NAME, deployment, replicas, rng)
    plan: list[tuple[FaultKind, float, Inject]] = [
        (FaultKind.REPLICA_KILL, settings.kill_every_s, kill),
        (FaultKind.STEP_FAULT, settings.fault_every_s, step_faulter(handle)),
    ]
    if endpoints.embedded_redis is not None:
        restart = redis_restarter(endpoints.embedded_redis)
        plan.append((FaultKind.REDIS_RESTART, settings.redis_restart_every_s, restart))
    return {
        kind: (times, inject)
        for kind, every_s, inject in plan
        if (times := fault_times(every_s, settings.duration_s))
    }


async def _play(
    endpoints: Endpoints,
    api_key: str,
    model: str,
    settings: ChaosSettings,
    schedule: Schedule,
    progress: Callable[[str], None],
) -> tuple[list[LedgerEntry], list[FaultEvent]]:
    async with AsyncOpenAI(
        base_url=endpoints.openai_base_url,
        api_key=api_key,
        max_retries=0,
        timeout=settings.request_timeout_s * 2,  # ChaosClient's timeout strikes first
    ) as openai_client:
        client = ChaosClient(
            openai_client, model, settings.max_tokens, settings.request_timeout_s, time.monotonic()
        )
        prompts = conversations("robots", 64)
        return await asyncio.gather(
            run_load(client, prompts, settings),
            run_faults(schedule, settings.duration_s, client.now, progress),
        )


def run_chaos_bench(
    config: PlatformConfig,
    settings: ChaosSettings,
    progress: Callable[[str], None] = lambda message: None,
) -> ChaosResult:
    """Start the platform, play the load and the faults, then check the replicas' KV blocks."""
    if settings.redis_restart_every_s > 0 and config.redis.url is not None:
        raise ConfigError(
            "the profile names its own Redis (redis.url), and the bench restarts only the one "
            "Prism embeds: drop redis.url or turn the restarts off (--redis-restart-every 0)"
        )
    config, model = _with_fault_hook(config)
    deployment = deployment_name(model)
    replicas = model.autoscaling.min_replicas if model.autoscaling else model.replicas
    with ExitStack() as stack:
        endpoints = start_platform(config, stack)
        handle = serve.get_deployment_handle(deployment, app_name=APP_NAME)
        schedule = _schedule(settings, endpoints, handle, deployment, replicas)
        api_key = read_api_key(config.http) or NO_API_KEY
        progress(f"{settings.concurrency} clients for {settings.duration_s:g} s, with faults")
        ledger, faults = asyncio.run(
            _play(endpoints, api_key, model.id, settings, schedule, progress)
        )
        progress("load over; waiting for every replica to be up and idle")
        running = wait_for_replicas(APP_NAME, deployment, replicas, settings.settle_timeout_s)
        kv = check_kv_blocks(handle, running, settings.settle_timeout_s)
    return ChaosResult(
        model=model.id,
        replicas=replicas,
        settings=settings,
        ledger=ledger,
        faults=faults,
        kv=kv,
        machine=describe_machine(torch.device("cpu")),
        date=datetime.now().isoformat(timespec="seconds"),
    )
