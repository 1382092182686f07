"""Lone requests: long prompts sent one at a time, to see what serving adds to the engine.

Each is a non-streamed greedy chat completion of one token over HTTP, so its wall time is its
time to first token as the client sees it. The response's Server-Timing header carries the
engine's own TTFT (arrival at the replica to first token): the difference is what the serving
path costs (HTTP proxy, ingress, routing, the handle call there and back). gRPC replies carry
no such number, so the phase runs over HTTP only.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import openai
from openai import AsyncOpenAI

from prism.bench.serve.load import cached_tokens
from prism.bench.serve.prompts import Messages
from prism.serving.headers import (
    ENGINE_TTFT_METRIC,
    REPLICA_HEADER,
    SERVER_TIMING_HEADER,
    server_timing_seconds,
)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam


@dataclass(frozen=True, slots=True)
class LoneRequest:
    """What one lone request saw. Times are in seconds."""

    http_ttft_seconds: float
    """The call's wall time, sending to the whole response (its one token)."""
    engine_ttft_seconds: float | None
    """From the response's Server-Timing; None if it carried none."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    replica: str | None = None
    error: str | None = None

    @property
    def overhead_seconds(self) -> float | None:
        """What the serving path added to the engine's TTFT."""
        if self.engine_ttft_seconds is None:
            return None
        return self.http_ttft_seconds - self.engine_ttft_seconds


async def send_lone_request(client: AsyncOpenAI, model: str, messages: Messages) -> LoneRequest:
    """One greedy, non-streamed chat completion of one token; an error is recorded."""
    started = time.perf_counter()
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model,
            messages=cast("list[ChatCompletionMessageParam]", messages),
            max_tokens=1,
            temperature=0.0,
        )
    except openai.APIError as error:
        return LoneRequest(time.perf_counter() - started, None, error=error.message)
    http_ttft = time.perf_counter() - started
    usage = raw.parse().usage
    return LoneRequest(
        http_ttft,
        server_timing_seconds(raw.headers.get(SERVER_TIMING_HEADER), ENGINE_TTFT_METRIC),
        prompt_tokens=usage.prompt_tokens if usage else 0,
        cached_tokens=cached_tokens(usage) if usage else 0,
        replica=raw.headers.get(REPLICA_HEADER),
    )


async def run_lone_requests(
    client: AsyncOpenAI, model: str, prompts: list[Messages]
) -> list[LoneRequest]:
    """Send each prompt once its previous one has answered.

    The client first opens its connection (``GET /v1/models``, which no replica serves), so
    the first request's time is the server's rather than the connection's.
    """
    with contextlib.suppress(openai.APIError):  # a server that fails it fails the requests too
        await client.models.list()
    return [await send_lone_request(client, model, messages) for messages in prompts]
