"""Lone requests read the engine's TTFT and the replica from a non-streamed response."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx

from prism.bench.serve.lone import run_lone_requests


def completion(prompt_tokens: int) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 1,
            "total_tokens": prompt_tokens + 1,
            "prompt_tokens_details": {"cached_tokens": 16},
        },
    }


def server(paths: list[str]) -> Callable[[httpx.Request], httpx.Response]:
    """Lists no models; answers a chat call, or refuses it with a 503 when it says "busy"."""

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": []})
        body = json.loads(request.content)
        assert (body["max_tokens"], body["temperature"], body.get("stream")) == (1, 0.0, None)
        if body["messages"][0]["content"] == "busy":
            error = {"message": "overloaded", "type": "service_unavailable", "code": 503}
            return httpx.Response(503, json={"error": error})
        headers = {"x-prism-replica": "r1", "server-timing": "engine-ttft;dur=12.5"}
        return httpx.Response(200, json=completion(800), headers=headers)

    return answer


def test_each_lone_request_records_its_engine_ttft_replica_and_tokens_or_its_error() -> None:
    paths: list[str] = []

    async def main():
        transport = httpx.MockTransport(server(paths))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench.test/v1/"
        ) as client:
            prompts = [[{"role": "user", "content": text}] for text in ("hello", "busy")]
            return await run_lone_requests(client, "m", prompts)

    answered, refused = asyncio.run(main())

    assert paths == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]
    assert answered.engine_ttft_seconds == 0.0125
    assert answered.http_ttft_seconds > 0
    assert answered.overhead_seconds == answered.http_ttft_seconds - 0.0125
    assert (answered.replica, answered.prompt_tokens, answered.cached_tokens) == ("r1", 800, 16)
    assert answered.error is None
    assert refused.error == "HTTP 503: overloaded"
    assert refused.engine_ttft_seconds is None and refused.overhead_seconds is None
