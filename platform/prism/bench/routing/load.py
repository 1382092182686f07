"""The routing benchmark's load: streamed token-id completions, timed at each SSE chunk.

Every request is greedy with EOS ignored (exactly ``output_tokens`` tokens), asks for the
usage chunk, and sends its group as the ``x-session-id`` header. Each records the replica
that served it and the cached tokens the router predicted for it, when it made a prediction.
With a concurrency, that many clients each send their next request when their previous one
is done; with a rate, requests arrive as a Poisson process. Either way, a conversation's
turn waits until its previous turn has finished.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI

from prism.bench.routing.workloads import PlannedRequest, Prompt
from prism.bench.serve.load import RequestRecord, take_usage
from prism.errors import PrismError
from prism.serving.headers import PREDICTED_CACHED_HEADER, REPLICA_HEADER, SESSION_HEADER

WARMUP_OUTPUT_TOKENS = 4
MAX_WARMUP_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class LoadShape:
    """How requests arrive: ``concurrency`` clients in a closed loop, or Poisson arrivals at
    ``rate`` requests/s when it is set; each request must finish within ``timeout_seconds``."""

    concurrency: int
    rate: float | None
    timeout_seconds: float
    seed: int = 0


@dataclass(frozen=True, slots=True)
class RoutedRecord:
    """One sent request: what was planned, when it went, and what came back."""

    request: PlannedRequest
    sent: float
    """Seconds from the start of the load to the moment it was sent."""
    result: RequestRecord
    predicted_cached_tokens: int | None
    """What the router said the chosen replica holds; None when it made no prediction."""


@dataclass(frozen=True, slots=True)
class RoutedRun:
    """Every request's record in planned order, and the wall time of the whole load."""

    records: list[RoutedRecord]
    seconds: float


async def _stream(
    client: AsyncOpenAI,
    model: str,
    prompt: Prompt,
    session: str,
    max_tokens: int,
    started: float,
    record: RequestRecord,
) -> int | None:
    """Stream one completion into ``record``; return the router's predicted cached tokens."""
    async with client.completions.with_streaming_response.create(
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
        extra_headers={SESSION_HEADER: session},
    ) as response:
        record.replica = response.headers.get(REPLICA_HEADER)
        predicted = response.headers.get(PREDICTED_CACHED_HEADER)
        async for chunk in await response.parse():
            if chunk.choices and chunk.choices[0].text:
                record.content_times.append(time.perf_counter() - started)
            if chunk.usage is not None:
                take_usage(record, chunk.usage)
    return None if predicted is None else int(predicted)


async def send_completion(
    client: AsyncOpenAI,
    model: str,
    prompt: Prompt,
    session: str,
    max_tokens: int,
    timeout_seconds: float,
) -> tuple[RequestRecord, int | None]:
    """Stream one completion; an API error or a timeout is recorded, not raised.

    Returns the record and the router's predicted cached tokens (None without a prediction).
    """
    record = RequestRecord()
    predicted = None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_seconds):
            predicted = await _stream(client, model, prompt, session, max_tokens, started, record)
    except openai.APIError as error:
        record.error = error.message
    except TimeoutError:
        record.error = f"no answer within {timeout_seconds:g} s"
    record.finished = time.perf_counter() - started
    return record, predicted


async def warm_up(
    client: AsyncOpenAI,
    model: str,
    prompts: Sequence[Prompt],
    replicas: int,
    timeout_seconds: float,
) -> set[str]:
    """Send ``prompts`` in concurrent rounds of ``replicas`` until every replica has answered
    one (or the prompts run out); return the replicas that answered.

    Each prompt goes with its own session id, so a session policy spreads them too.
    """
    seen: set[str] = set()
    for start in range(0, len(prompts), replicas):
        batch = prompts[start : start + replicas]
        sent = (
            send_completion(
                client, model, prompt, f"warmup-{start + i}", WARMUP_OUTPUT_TOKENS, timeout_seconds
            )
            for i, prompt in enumerate(batch)
        )
        for record, _ in await asyncio.gather(*sent):
            if record.error is not None:
                raise PrismError(f"a warm-up request failed: {record.error}")
            seen.update(filter(None, (record.replica or "").split(",")))
        if len(seen) >= replicas:
            break
    return seen


async def _closed_loop(
    requests: Sequence[PlannedRequest],
    send: Callable[[PlannedRequest], Coroutine[Any, Any, None]],
    concurrency: int,
) -> None:
    pending = iter(requests)  # shared: each client takes the next unsent request

    async def client_loop() -> None:
        for request in pending:
            await send(request)

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))


async def _poisson(
    requests: Sequence[PlannedRequest],
    send: Callable[[PlannedRequest], Coroutine[Any, Any, None]],
    rate: float,
    seed: int,
) -> None:
    gaps = random.Random(seed)
    tasks = []
    for request in requests:
        tasks.append(asyncio.create_task(send(request)))
        await asyncio.sleep(gaps.expovariate(rate))
    await asyncio.gather(*tasks)


async def run_routed_load(
    client: AsyncOpenAI,
    model: str,
    requests: Sequence[PlannedRequest],
    output_tokens: int,
    shape: LoadShape,
    on_request_done: Callable[[RoutedRecord], None],
) -> RoutedRun:
    """Send every request as ``shape`` says, each after the one it waits for, and record them."""
    finished = {request.index: asyncio.Event() for request in requests}
    records: list[RoutedRecord] = []
    started = time.perf_counter()

    async def send(request: PlannedRequest) -> None:
        if request.after is not None:
            await finished[request.after].wait()
        sent = time.perf_counter() - started
        result, predicted = await send_completion(
            client, model, request.prompt, request.session, output_tokens, shape.timeout_seconds
        )
        record = RoutedRecord(request, sent, result, predicted)
        records.append(record)
        finished[request.index].set()
        on_request_done(record)

    if shape.rate is None:
        await _closed_loop(requests, send, shape.concurrency)
    else:
        await _poisson(requests, send, shape.rate, shape.seed)
    seconds = time.perf_counter() - started
    return RoutedRun(sorted(records, key=lambda record: record.request.index), seconds)
