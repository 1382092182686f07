"""The serving benchmark: load a running Prism server and measure it as clients see it.

The server is reached over its OpenAI-compatible HTTP API or its gRPC API; the prompts, the
load and the measures are the same either way. Over HTTP, lone requests come first, so the
first of them is the server's first request since it started if nothing else came before
(:mod:`prism.bench.serve.lone`). Then a warm-up of one short request per client (untimed;
its raw prompt shares no prefix with the workload beyond the chat template's default system
prompt), then the whole workload. See :mod:`prism.bench.serve.load` for how requests are
sent and timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import httpx
import torch
from openai import AsyncOpenAI

from prism.bench.machine import describe_machine
from prism.bench.prompts import WARMUP_TEXT, WARMUP_TOKENS
from prism.bench.serve.load import (
    LoadRun,
    LoadSettings,
    RequestRecord,
    StreamChat,
    grpc_chat,
    openai_chat,
    run_load,
    send_request,
)
from prism.bench.serve.lone import LoneRequest, run_lone_requests
from prism.bench.serve.prompts import LONE_PROMPT_WORDS, conversations, lone_prompts
from prism.bench.serve.results import ServeBenchResult, summarize, summarize_lone
from prism.bench.serve.workload import (
    DEFAULT_TIMEOUT_SECONDS,
    PROTOCOLS,
    ServeTarget,
    ServeWorkload,
)
from prism.client import AsyncPrismClient

logger = logging.getLogger(__name__)


def _openai_client(target: ServeTarget, timeout: float) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=target.address, api_key=target.api_key, max_retries=0, timeout=timeout
    )


def _http_client(target: ServeTarget, timeout: float) -> httpx.AsyncClient:
    """A bare HTTP client on the OpenAI API's base URL, with the API key if there is one."""
    headers = {"authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    return httpx.AsyncClient(
        base_url=target.address.rstrip("/") + "/", headers=headers, timeout=timeout
    )


@contextlib.asynccontextmanager
async def _chat_stream(
    target: ServeTarget, model: str, timeout: float
) -> AsyncIterator[StreamChat]:
    """How one chat request is streamed over ``target``'s protocol, its client open meanwhile.

    The gRPC calls get no deadline of their own: the load's timeout cancels them.
    """
    if target.protocol == "grpc":
        async with AsyncPrismClient(
            target.address, timeout=None, api_key=target.api_key
        ) as grpc_client:
            yield grpc_chat(grpc_client, model)
    else:
        async with _openai_client(target, timeout) as http_client:
            yield openai_chat(http_client, model)


async def _lone_requests(
    target: ServeTarget,
    model: str,
    count: int,
    timeout: float,
    progress: Callable[[str], None],
) -> list[LoneRequest] | None:
    """``count`` lone requests over HTTP; None when there are none or the target is gRPC."""
    if not count:
        return None
    if target.protocol == "grpc":
        progress("lone requests: skipped (gRPC replies carry no engine TTFT)")
        return None
    progress(f"lone requests: {count} of about {LONE_PROMPT_WORDS} words, one at a time")
    prompts = lone_prompts(count, secrets.randbits(32))
    async with _http_client(target, timeout) as client:
        return await run_lone_requests(client, model, prompts)


async def _measure(
    target: ServeTarget,
    model: str,
    workload: ServeWorkload,
    settings: LoadSettings,
    progress: Callable[[str], None],
    on_request_done: Callable[[RequestRecord], None],
) -> tuple[list[LoneRequest] | None, LoadRun]:
    lone = await _lone_requests(
        target, model, workload.lone_requests, settings.timeout_seconds, progress
    )
    prompts = conversations(workload.prompt_set, workload.num_requests)
    warmup = [{"role": "user", "content": WARMUP_TEXT}]
    async with _chat_stream(target, model, settings.timeout_seconds) as stream:
        progress(f"warm-up: {settings.concurrency} requests of {WARMUP_TOKENS} tokens")
        await asyncio.gather(
            *(
                send_request(stream, warmup, WARMUP_TOKENS, settings.timeout_seconds)
                for _ in range(settings.concurrency)
            )
        )
        progress(
            f"{len(prompts)} requests x {settings.max_tokens} tokens, "
            f"{settings.concurrency} at a time, to {model} at {target.address} "
            f"over {target.protocol}"
        )
        return lone, await run_load(stream, prompts, settings, on_request_done)


def run_serve_bench(
    target: ServeTarget,
    model: str,
    workload: ServeWorkload,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    progress: Callable[[str], None] = logger.info,
    on_request_done: Callable[[RequestRecord], None] = lambda record: None,
) -> ServeBenchResult:
    """Run ``workload`` against ``model`` at ``target`` and summarize it.

    Each request must finish within ``timeout_seconds`` or counts as an error. ``progress``
    hears of each phase, ``on_request_done`` of each measured request. The machine recorded
    is the one the load generator runs on.
    """
    if target.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {target.protocol!r}; expected one of {PROTOCOLS}")
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    settings = LoadSettings(workload.max_tokens, workload.concurrency, timeout_seconds)
    lone, run = asyncio.run(_measure(target, model, workload, settings, progress, on_request_done))
    return ServeBenchResult(
        date=started,
        machine=describe_machine(torch.device("cpu")),
        protocol=target.protocol,
        target=target.address,
        model_id=model,
        workload=workload,
        summary=summarize(run),
        lone=None if lone is None else summarize_lone(lone),
    )
