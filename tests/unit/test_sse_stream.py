"""Prism's OpenAI stream response on a real HTTP server: pings, the closing [DONE], leaving."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from prism.redis_server import free_port
from prism.serving import openai_format as fmt
from prism.serving.responses import OpenAIStream

SILENCE_S = 0.4
"""How long the test streams wait between their two chunks."""

closed_streams: list[str] = []


async def _stream(request: Request) -> OpenAIStream:
    """Two chunks ``SILENCE_S`` apart; with ``?hang=1`` no end after them."""
    name = request.query_params["name"]

    async def events():
        try:
            yield fmt.chunk_event({"n": 0})
            await asyncio.sleep(SILENCE_S)
            yield fmt.chunk_event({"n": 1})
            if request.query_params.get("hang"):
                await asyncio.sleep(3600)
        finally:
            closed_streams.append(name)

    ping_interval_s = float(request.query_params["ping"])
    return OpenAIStream(events(), {"x-prism-replica": "replica-1"}, ping_interval_s)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    port = free_port()
    app = Starlette(routes=[Route("/stream", _stream, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _lines(server_url: str, **params: str) -> tuple[httpx.Headers, list[str]]:
    response = httpx.post(f"{server_url}/stream", params=params, timeout=10)
    assert response.status_code == 200
    return response.headers, response.text.split("\n")


def test_a_silence_is_filled_with_pings_and_the_stream_ends_with_done(server_url: str) -> None:
    headers, lines = _lines(server_url, name="pinged", ping="0.05")
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-prism-replica"] == "replica-1"
    events = [line for line in lines if line]
    assert events[0] == 'data: {"n":0}'
    assert events[-2:] == ['data: {"n":1}', "data: [DONE]"]
    pings = events[1:-2]
    assert len(pings) >= 3 and set(pings) == {": ping"}
    assert lines[-2:] == ["", ""]  # every event ends with a blank line, [DONE] too


def test_no_pings_when_the_interval_is_zero(server_url: str) -> None:
    _, lines = _lines(server_url, name="quiet", ping="0")
    assert "\n".join(lines) == 'data: {"n":0}\n\ndata: {"n":1}\n\ndata: [DONE]\n\n'


def test_a_client_that_leaves_closes_the_events(server_url: str) -> None:
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST", f"{server_url}/stream", params={"name": "left", "hang": "1", "ping": "0.05"}
        ) as response,
    ):
        for line in response.iter_lines():
            if line == 'data: {"n":1}':
                break
    deadline = time.monotonic() + 5
    while "left" not in closed_streams:
        assert time.monotonic() < deadline, "the events were never closed"
        time.sleep(0.01)
