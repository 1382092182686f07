"""The serving benchmark's load: concurrent streaming chat clients, timed at each SSE chunk.

Each client sends its next request as soon as its previous one finishes, until every
conversation has been sent. Requests are greedy with EOS ignored, so each produces exactly
``max_tokens`` tokens, and ask for the usage chunk at the end of the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import openai
from openai import AsyncOpenAI

from prism.bench.serve_prompts import Messages
from prism.serving.headers import REPLICA_HEADER


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """Who is asked, how much each request generates and how many requests run at once."""

    model: str
    max_tokens: int
    concurrency: int
    timeout_seconds: float


@dataclass(slots=True)
class RequestRecord:
    """What one request saw. Times are seconds since it was sent."""

    content_times: list[float] = field(default_factory=list)
    """When each chunk carrying text arrived."""
    finished: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    replica: str | None = None
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.content_times[0] if self.content_times else None

    @property
    def inter_token_gaps(self) -> list[float]:
        """The gaps between successive chunks carrying text."""
        return [later - earlier for earlier, later in pairwise(self.content_times)]


@dataclass(frozen=True, slots=True)
class LoadRun:
    """Every request's record, and the wall time from the first send to the last finish."""

    records: list[RequestRecord]
    seconds: float


async def _stream(
    client: AsyncOpenAI,
    model: str,
    messages: Messages,
    max_tokens: int,
    started: float,
    record: RequestRecord,
) -> None:
    async with client.chat.completions.with_streaming_response.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    ) as response:
        record.replica = response.headers.get(REPLICA_HEADER)
        async for chunk in await response.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                record.content_times.append(time.perf_counter() - started)
            if chunk.usage is not None:
                record.prompt_tokens = chunk.usage.prompt_tokens
                record.completion_tokens = chunk.usage.completion_tokens
                details = chunk.usage.prompt_tokens_details
                record.cached_tokens = (details.cached_tokens or 0) if details else 0


async def send_request(
    client: AsyncOpenAI, messages: Messages, max_tokens: int, settings: LoadSettings
) -> RequestRecord:
    """Stream one chat completion; an API error or a timeout is recorded, not raised."""
    record = RequestRecord()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.timeout_seconds):
            await _stream(client, settings.model, messages, max_tokens, started, record)
    except openai.APIError as error:
        record.error = error.message
    except TimeoutError:
        record.error = f"no answer within {settings.timeout_seconds:g} s"
    record.finished = time.perf_counter() - started
    return record


async def run_load(
    client: AsyncOpenAI,
    conversations: list[Messages],
    settings: LoadSettings,
    on_request_done: Callable[[RequestRecord], None],
) -> LoadRun:
    """Send every conversation through ``settings.concurrency`` clients, one request each at
    a time, and record them all."""
    pending = iter(conversations)  # shared: each client takes the next unsent conversation
    records: list[RequestRecord] = []

    async def client_loop() -> None:
        for messages in pending:
            record = await send_request(client, messages, settings.max_tokens, settings)
            records.append(record)
            on_request_done(record)

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(settings.concurrency)))
    return LoadRun(records, time.perf_counter() - started)
