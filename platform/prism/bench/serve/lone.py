"""Lone requests: long prompts sent one at a time, to see what serving adds to the engine.

Each is a non-streamed greedy chat completion of one token over HTTP, so its wall time is its
time to first token as the client sees it. The response's Server-Timing header carries the
engine's own TTFT (arrival at the replica to first token): the difference is what the serving
path costs (HTTP proxy, ingress, routing, the handle call there and back). gRPC replies carry
no such number, so the phase runs over HTTP only.

The requests go out through a bare HTTP client with each body encoded before the clock
starts, so the figure holds the server's cost and none of a client library's.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass

import httpx
from openai.types import CompletionUsage

from prism.bench.serve.load import cached_tokens
from prism.bench.serve.prompts import Messages
from prism.serving.headers import (
    ENGINE_TTFT_METRIC,
    REPLICA_HEADER,
    SERVER_TIMING_HEADER,
    server_timing_seconds,
)


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


def _error_message(response: httpx.Response) -> str:
    """An error response's message: the OpenAI error body's, else the status line."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.reason_phrase
    return f"HTTP {response.status_code}: {message}"


async def send_lone_request(
    client: httpx.AsyncClient, model: str, messages: Messages
) -> LoneRequest:
    """One greedy, non-streamed chat completion of one token; an error is recorded."""
    body = json.dumps(
        {"model": model, "messages": messages, "max_tokens": 1, "temperature": 0.0}
    ).encode()
    headers = {"content-type": "application/json"}
    started = time.perf_counter()
    try:
        response = await client.post("chat/completions", content=body, headers=headers)
    except httpx.HTTPError as error:
        return LoneRequest(time.perf_counter() - started, None, error=repr(error))
    http_ttft = time.perf_counter() - started
    if response.is_error:
        return LoneRequest(http_ttft, None, error=_error_message(response))
    usage_body = response.json().get("usage")
    usage = CompletionUsage.model_validate(usage_body) if usage_body else None
    return LoneRequest(
        http_ttft,
        server_timing_seconds(response.headers.get(SERVER_TIMING_HEADER), ENGINE_TTFT_METRIC),
        prompt_tokens=usage.prompt_tokens if usage else 0,
        cached_tokens=cached_tokens(usage) if usage else 0,
        replica=response.headers.get(REPLICA_HEADER),
    )


async def run_lone_requests(
    client: httpx.AsyncClient, model: str, prompts: list[Messages]
) -> list[LoneRequest]:
    """Send each prompt once its previous one has answered.

    ``client``'s base URL is the OpenAI API's (``.../v1/``). It first opens its connection
    (``GET models``, which no replica serves), so the first request's time is the server's
    rather than the connection's.
    """
    with contextlib.suppress(httpx.HTTPError):  # a server that fails it fails the requests too
        await client.get("models")
    return [await send_lone_request(client, model, messages) for messages in prompts]
