"""The serving benchmark's load: concurrent streaming chat clients, timed at each chunk.

Each client sends its next request as soon as its previous one finishes, until every
conversation has been sent. Requests are greedy with EOS ignored, so each produces exactly
``max_tokens`` tokens, and report their usage at the end of the stream. The load is the
same over either protocol; only how one request is streamed differs (a :data:`StreamChat`:
:func:`openai_chat` or :func:`grpc_chat`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, cast

import grpc
import openai
from openai import AsyncOpenAI
from openai.types import CompletionUsage

from prism.bench.serve.prompts import Messages
from prism.client import AsyncPrismClient, describe_rpc_error
from prism.serving.headers import REPLICA_HEADER

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

NO_API_KEY = "unused"  # the openai client insists on a key; a server without one ignores it


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """How much each request generates, how many run at once and how long each may take."""

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


class RequestFailed(Exception):
    """The server answered a request with an error (the message says which)."""


StreamChat = Callable[[Messages, int, RequestRecord], AsyncIterator[str]]
"""Streams one greedy chat request of ``max_tokens`` tokens, EOS ignored: yields the text of
each chunk that carries some, and fills the record's token counts and replica. Raises
:class:`RequestFailed` for an error the server answers with."""


def cached_tokens(usage: CompletionUsage) -> int:
    """The cached prompt tokens an OpenAI usage reports (0 when it says nothing)."""
    details = usage.prompt_tokens_details
    return (details.cached_tokens or 0) if details else 0


def take_usage(record: RequestRecord, usage: CompletionUsage) -> None:
    """Copy the token counts of an OpenAI usage chunk into ``record``."""
    record.prompt_tokens = usage.prompt_tokens
    record.completion_tokens = usage.completion_tokens
    record.cached_tokens = cached_tokens(usage)


def openai_chat(client: AsyncOpenAI, model: str) -> StreamChat:
    """Chat requests to ``model`` through the OpenAI chat completions API."""

    async def stream(
        messages: Messages, max_tokens: int, record: RequestRecord
    ) -> AsyncIterator[str]:
        try:
            async with client.chat.completions.with_streaming_response.create(
                model=model,
                messages=cast("list[ChatCompletionMessageParam]", messages),
                max_tokens=max_tokens,
                temperature=0.0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            ) as response:
                record.replica = response.headers.get(REPLICA_HEADER)
                async for chunk in await response.parse():
                    if chunk.usage is not None:
                        take_usage(record, chunk.usage)
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content
        except openai.APIError as error:
            raise RequestFailed(error.message) from error

    return stream


def grpc_chat(client: AsyncPrismClient, model: str) -> StreamChat:
    """Chat requests to ``model`` through ``prism.v1.Generation/Chat``."""

    async def stream(
        messages: Messages, max_tokens: int, record: RequestRecord
    ) -> AsyncIterator[str]:
        try:
            async with client.chat(
                model, messages, max_tokens=max_tokens, temperature=0.0, ignore_eos=True
            ) as replies:
                async for reply in replies:
                    record.replica = record.replica or reply.replica or None
                    if reply.HasField("usage"):
                        record.prompt_tokens = reply.usage.prompt_tokens
                        record.completion_tokens = reply.usage.completion_tokens
                        record.cached_tokens = reply.usage.cached_tokens
                    if reply.text:
                        yield reply.text
        except grpc.RpcError as error:
            raise RequestFailed(describe_rpc_error(error)) from error

    return stream


async def send_request(
    stream: StreamChat, messages: Messages, max_tokens: int, timeout_seconds: float
) -> RequestRecord:
    """Stream one chat request; an error the server answers or a timeout is recorded, not
    raised."""
    record = RequestRecord()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_seconds):
            async for _ in stream(messages, max_tokens, record):
                record.content_times.append(time.perf_counter() - started)
    except RequestFailed as error:
        record.error = str(error)
    except TimeoutError:
        record.error = f"no answer within {timeout_seconds:g} s"
    record.finished = time.perf_counter() - started
    return record


async def run_load(
    stream: StreamChat,
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
            record = await send_request(
                stream, messages, settings.max_tokens, settings.timeout_seconds
            )
            records.append(record)
            on_request_done(record)

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(settings.concurrency)))
    return LoadRun(records, time.perf_counter() - started)
