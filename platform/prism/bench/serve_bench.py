"""The serving benchmark: load a running OpenAI-compatible server and measure it as clients see it.

A warm-up of one short request per client comes first (untimed; its raw prompt shares no
prefix with the workload beyond the chat template's default system prompt), then the whole
workload. See :mod:`prism.bench.serve_load` for how requests are sent and timed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import torch
from openai import AsyncOpenAI

from prism.bench.machine import describe_machine
from prism.bench.serve_load import LoadRun, LoadSettings, RequestRecord, run_load, send_request
from prism.bench.serve_prompts import Messages, conversations
from prism.bench.serve_results import ServeBenchResult, ServeWorkload, summarize
from prism.bench.workloads import WARMUP_TEXT, WARMUP_TOKENS

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 300.0


async def _measure(
    url: str,
    api_key: str,
    prompts: list[Messages],
    settings: LoadSettings,
    progress: Callable[[str], None],
    on_request_done: Callable[[RequestRecord], None],
) -> LoadRun:
    warmup = [{"role": "user", "content": WARMUP_TEXT}]
    async with AsyncOpenAI(
        base_url=url, api_key=api_key, max_retries=0, timeout=settings.timeout_seconds
    ) as client:
        progress(f"warm-up: {settings.concurrency} requests of {WARMUP_TOKENS} tokens")
        await asyncio.gather(
            *(
                send_request(client, warmup, WARMUP_TOKENS, settings)
                for _ in range(settings.concurrency)
            )
        )
        progress(
            f"{len(prompts)} requests x {settings.max_tokens} tokens, "
            f"{settings.concurrency} at a time, to {settings.model} at {url}"
        )
        return await run_load(client, prompts, settings, on_request_done)


def run_serve_bench(
    url: str,
    api_key: str,
    model: str,
    workload: ServeWorkload,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    progress: Callable[[str], None] = logger.info,
    on_request_done: Callable[[RequestRecord], None] = lambda record: None,
) -> ServeBenchResult:
    """Run ``workload`` against ``model`` at the OpenAI API ``url`` and summarize it.

    Each request must finish within ``timeout_seconds`` or counts as an error. ``progress``
    hears of each phase, ``on_request_done`` of each measured request. The machine recorded
    is the one the load generator runs on.
    """
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    settings = LoadSettings(model, workload.max_tokens, workload.concurrency, timeout_seconds)
    prompts = conversations(workload.prompt_set, workload.num_requests)
    run = asyncio.run(_measure(url, api_key, prompts, settings, progress, on_request_done))
    return ServeBenchResult(
        date=started,
        machine=describe_machine(torch.device("cpu")),
        url=url,
        model_id=model,
        workload=workload,
        summary=summarize(run),
    )
