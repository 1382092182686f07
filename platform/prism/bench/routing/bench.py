"""The routing benchmark: one workload against the same deployment under several policies.

Ray and Redis start once. Each policy then gets a fresh deployment of the Serve application
(fresh replicas, so every policy starts with cold caches), waits for its health check, warms
up with short requests that share nothing with the workload until every replica has answered
one (untimed), runs the workload, and is deleted. Only the profile's first model is
deployed, with a fixed replica count. See :mod:`prism.bench.routing.load` for how requests
are sent and timed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import datetime

import httpx
import torch
from openai import AsyncOpenAI
from ray import serve

from prism.bench.machine import describe_machine
from prism.bench.routing.decision import measure_decision_time
from prism.bench.routing.load import (
    MAX_WARMUP_ROUNDS,
    LoadShape,
    RoutedRecord,
    RoutedRun,
    run_routed_load,
    warm_up,
)
from prism.bench.routing.results import (
    PolicyResult,
    RoutingBenchResult,
    RoutingDeployment,
    summarize_policy,
)
from prism.bench.routing.workloads import (
    PlannedRequest,
    RoutingWorkload,
    plan_requests,
    warmup_prompts,
)
from prism.bench.serve.load import NO_API_KEY
from prism.config import PlatformConfig, RouterSettings
from prism.errors import PrismError
from prism.launcher import start_platform
from prism.serving.app import APP_NAME, build_app
from prism.serving.ingress import read_api_key

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 120.0


def deployment_config(config: PlatformConfig, deployment: RoutingDeployment) -> PlatformConfig:
    """``config`` reduced to its first model, deployed as ``deployment`` says (a fixed replica
    count, no autoscaling)."""
    model = config.models[0]
    model = model.model_copy(
        update={
            "replicas": deployment.replicas,
            "autoscaling": None,
            "resources": model.resources.model_copy(update={"num_cpus": deployment.num_cpus}),
            "engine": model.engine.model_copy(update={"kv_cache_bytes": deployment.kv_cache_bytes}),
        }
    )
    http = config.http.model_copy(update={"ingress_replicas": deployment.ingress_replicas})
    return config.model_copy(update={"models": [model], "http": http})


def with_policy(config: PlatformConfig, policy: str) -> PlatformConfig:
    """``config`` routing by ``policy`` (validated: one of the router's policies)."""
    router = RouterSettings.model_validate({**config.router.model_dump(), "policy": policy})
    return config.model_copy(update={"router": router})


def with_redis(config: PlatformConfig, url: str) -> PlatformConfig:
    """``config`` using the Redis at ``url`` (the platform's embedded one, for redeploys)."""
    return config.model_copy(update={"redis": config.redis.model_copy(update={"url": url})})


def _wait_until_healthy(openai_base_url: str) -> None:
    url = openai_base_url.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while True:
        try:
            if httpx.get(url, timeout=5.0).status_code == httpx.codes.OK:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise PrismError(f"{url} was not healthy within {HEALTH_TIMEOUT_SECONDS:g} s")
        time.sleep(0.5)


async def _measure(
    url: str,
    api_key: str,
    model_id: str,
    requests: list[PlannedRequest],
    workload: RoutingWorkload,
    replicas: int,
    load: LoadShape,
    progress: Callable[[str], None],
    on_request_done: Callable[[RoutedRecord], None],
) -> tuple[RoutedRun, set[str]]:
    async with AsyncOpenAI(
        base_url=url, api_key=api_key, max_retries=0, timeout=load.timeout_seconds
    ) as client:
        prompts = warmup_prompts(replicas * MAX_WARMUP_ROUNDS, workload.seed)
        answered = await warm_up(client, model_id, prompts, replicas, load.timeout_seconds)
        progress(f"warm-up: {len(answered)} of {replicas} replicas answered")
        run = await run_routed_load(
            client, model_id, requests, workload.output_tokens, load, on_request_done
        )
    return run, answered


def run_routing_bench(
    config: PlatformConfig,
    deployment: RoutingDeployment,
    policies: Sequence[str],
    workload: RoutingWorkload,
    load: LoadShape,
    progress: Callable[[str], None] = logger.info,
    on_request_done: Callable[[RoutedRecord], None] = lambda record: None,
) -> RoutingBenchResult:
    """Run ``workload`` on ``config``'s first model, deployed as ``deployment``, under each of
    ``policies`` in turn, and summarize each.

    ``progress`` hears of each phase, ``on_request_done`` of each measured request. The
    machine recorded is the one the benchmark runs on (and, without ``RAY_ADDRESS``, the
    replicas too).
    """
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    config = deployment_config(config, deployment)
    model_id = config.models[0].id
    requests = plan_requests(workload, config.models[0].engine.block_size)
    api_key = read_api_key(config.http) or NO_API_KEY
    results = []
    with ExitStack() as stack:
        progress(f"starting Ray, Redis and {deployment.replicas} replicas routed by {policies[0]}")
        endpoints = start_platform(with_policy(config, policies[0]), stack)
        config = with_redis(config, endpoints.index_url)
        for index, policy in enumerate(policies):
            if index:
                progress(f"deploying {deployment.replicas} fresh replicas routed by {policy}")
                serve.run(build_app(with_policy(config, policy)), name=APP_NAME, route_prefix="/")
            _wait_until_healthy(endpoints.openai_base_url)
            progress(f"{policy}: warm-up, then {len(requests)} requests")
            run, answered = asyncio.run(
                _measure(
                    endpoints.openai_base_url,
                    api_key,
                    model_id,
                    requests,
                    workload,
                    deployment.replicas,
                    load,
                    progress,
                    on_request_done,
                )
            )
            serve.delete(APP_NAME)
            results.append(PolicyResult(summarize_policy(policy, run, answered), run.records))
        progress("timing the router's decisions on an 8k-token prompt")
        decision_ms = measure_decision_time(endpoints.index_url)
    return RoutingBenchResult(
        date=started,
        machine=describe_machine(torch.device("cpu")),
        model_id=model_id,
        deployment=deployment,
        workload=workload,
        load=load,
        policies=results,
        decision_ms=decision_ms,
    )
