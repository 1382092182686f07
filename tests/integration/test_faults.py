"""Client disconnects, overload and the metrics that report them."""

from __future__ import annotations

import asyncio
import time

import httpx

from support.live_platform import API_KEY, MAX_NUM_SEQS, MAX_QUEUED, MODEL_ID, Platform
from support.metrics import metric_value, scrape_metrics

STORY = {
    "model": MODEL_ID,
    "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
    "max_tokens": 400,
    "ignore_eos": True,
    "stream": True,
}
HEADERS = {"authorization": f"Bearer {API_KEY}"}


def test_disconnect_mid_stream_aborts_and_frees_kv_blocks(platform: Platform) -> None:
    story = STORY | {"max_tokens": 1500}  # half a minute of tokens or more, unless aborted
    with (
        httpx.Client(base_url=platform.base_url, headers=HEADERS, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=story) as response,
    ):
        assert response.status_code == 200
        events = 0
        for line in response.iter_lines():
            events += line.startswith("data: ")
            if events >= 4:
                break
        assert platform.engine_stats()["num_running"] == 1
    platform.wait_until_idle(timeout=2)  # nothing running or waiting, every KV block free


def test_queue_overflow_is_a_429_and_the_rest_are_served(platform: Platform) -> None:
    async def one(client: httpx.AsyncClient) -> int:
        body = STORY | {"max_tokens": 48, "stream": False}
        response = await client.post("/v1/chat/completions", json=body)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "overloaded"
        return response.status_code

    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            base_url=platform.base_url, headers=HEADERS, timeout=120
        ) as client:
            return await asyncio.gather(*(one(client) for _ in range(3 * MAX_NUM_SEQS)))

    statuses = asyncio.run(burst())
    assert statuses.count(429) > 0
    assert statuses.count(200) >= MAX_NUM_SEQS + MAX_QUEUED
    assert set(statuses) == {200, 429}
    platform.wait_until_idle()


ENGINE_METRICS = [
    "ray_prism_num_requests_running",
    "ray_prism_num_requests_waiting",
    "ray_prism_kv_cache_usage_ratio",
    "ray_prism_pending_prefill_tokens",
    "ray_prism_prefix_cache_queries_total",
    "ray_prism_prefix_cache_hits_total",
    "ray_prism_prompt_tokens_total",
    "ray_prism_generation_tokens_total",
    "ray_prism_time_to_first_token_seconds_count",
    "ray_prism_inter_token_latency_seconds_count",
    "ray_prism_e2e_request_latency_seconds_count",
]


def settled_scrape(platform: Platform) -> str:
    """A scrape taken once earlier requests' metrics have all been exported."""
    previous = None
    for _ in range(30):
        text = scrape_metrics(platform.metrics_urls)
        count = metric_value(text, "ray_prism_e2e_request_latency_seconds_count")
        if count is not None and count == previous:
            return text
        previous = count
        time.sleep(2)
    raise AssertionError("metrics never settled")


def test_metrics_count_the_requests_sent(platform: Platform) -> None:
    client = platform.client()
    platform.wait_until_idle()
    before = settled_scrape(platform)
    sent = 3
    for index in range(sent):
        client.completions.create(
            model=MODEL_ID,
            prompt=f"Count to {index}:",
            max_tokens=5,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
    deadline = time.monotonic() + 60
    while True:
        text = scrape_metrics(platform.metrics_urls)
        counts = {
            name: (metric_value(text, name, model=MODEL_ID) or 0.0)
            - (metric_value(before, name, model=MODEL_ID) or 0.0)
            for name in (
                "ray_prism_e2e_request_latency_seconds_count",
                "ray_prism_generation_tokens_total",
            )
        }
        missing = [name for name in ENGINE_METRICS if metric_value(text, name) is None]
        if not missing and counts["ray_prism_e2e_request_latency_seconds_count"] >= sent:
            break
        assert time.monotonic() < deadline, f"metrics not exported: {missing} {counts}"
        time.sleep(1)
    assert counts["ray_prism_e2e_request_latency_seconds_count"] == sent
    assert counts["ray_prism_generation_tokens_total"] == 5 * sent
    assert metric_value(text, "ray_prism_kv_cache_usage_ratio") <= 1.0
    hits = metric_value(text, "ray_prism_prefix_cache_hits_total")
    queries = metric_value(text, "ray_prism_prefix_cache_queries_total")
    assert 0 <= hits <= queries
    assert metric_value(text, "ray_prism_api_requests_total", status="200") >= sent
