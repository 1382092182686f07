"""The autoscaling benchmark: a step-shaped load against an autoscaled deployment.

Ray and the platform start from a profile (its first model must have ``autoscaling``).
Closed-loop streaming clients follow the steps (e.g. 1 client for 30 s, then 10 for 120 s);
meanwhile the deployment's replicas are counted every ``sample_period_s``. After the last
step the bench keeps counting until the deployment is back at ``min_replicas`` (or
``settle_timeout_s`` passes), so the scale-in shows too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime

import torch
from openai import AsyncOpenAI

from prism.bench.autoscale.load import BackgroundLoad, TimedRecord
from prism.bench.autoscale.replica_watch import ReplicaSample, sample_replicas
from prism.bench.autoscale.settings import AutoscaleSettings
from prism.bench.machine import Machine, describe_machine
from prism.bench.serve.load import NO_API_KEY, StreamChat, openai_chat
from prism.bench.serve.prompts import conversations
from prism.config import ConfigError, PlatformConfig
from prism.launcher import start_platform
from prism.serving.app import APP_NAME, deployment_name


@dataclass(frozen=True, slots=True)
class AutoscaleResult:
    model: str
    min_replicas: int
    max_replicas: int
    settings: AutoscaleSettings
    samples: list[ReplicaSample]
    records: list[TimedRecord]
    machine: Machine
    date: str


def _stream(base_url: str, model: str) -> Callable[[], StreamChat]:
    def make() -> StreamChat:
        client = AsyncOpenAI(base_url=base_url, api_key=NO_API_KEY, max_retries=0)
        return openai_chat(client, model)

    return make


def run_autoscale_bench(
    config: PlatformConfig,
    settings: AutoscaleSettings,
    progress: Callable[[str], None] = lambda message: None,
) -> AutoscaleResult:
    """Start the platform, play the steps, and record replicas and requests over time."""
    model = config.models[0]
    if model.autoscaling is None:
        raise ConfigError(f"model {model.id!r} has no autoscaling section to benchmark")
    config = config.model_copy(update={"models": [model]})
    deployment = deployment_name(model)
    samples: list[ReplicaSample] = []
    with ExitStack() as stack:
        endpoints = start_platform(config, stack)
        prompts = conversations("robots", 32)
        with BackgroundLoad(
            _stream(endpoints.openai_base_url, model.id),
            prompts,
            settings.max_tokens,
            settings.timeout_s,
        ) as load:

            def watch(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    samples.append(sample_replicas(APP_NAME, deployment, load.started))
                    time.sleep(settings.sample_period_s)

            for step in settings.steps:
                progress(f"{step.clients} clients for {step.seconds:g} s")
                load.resize(step.clients)
                watch(step.seconds)
            progress("load stopped; waiting for the replicas to return to the minimum")
            load.resize(0)
            settle_end = time.monotonic() + settings.settle_timeout_s
            while time.monotonic() < settle_end and (
                samples[-1].running + samples[-1].starting + samples[-1].stopping
                > model.autoscaling.min_replicas
            ):
                watch(settings.sample_period_s)
            records = load.close()
    return AutoscaleResult(
        model=model.id,
        min_replicas=model.autoscaling.min_replicas,
        max_replicas=model.autoscaling.max_replicas,
        settings=settings,
        samples=samples,
        records=records,
        machine=describe_machine(torch.device("cpu")),
        date=datetime.now().isoformat(timespec="seconds"),
    )
