"""``prism serve`` brings the platform up, answers as the README says, and stops cleanly."""

from __future__ import annotations

import httpx
import openai
import pytest

from support.prism_process import ServedPlatform

pytestmark = pytest.mark.slow


def test_serve_prints_the_urls(served_platform: ServedPlatform) -> None:
    output = "".join(served_platform.lines)
    assert f"OpenAI API:    {served_platform.base_url}/v1" in output
    assert f"gRPC API:      {served_platform.grpc_target}" in output
    assert "Ray dashboard: http://" in output
    assert "Redis:         redis://127.0.0.1:" in output


def test_the_default_model_answers_a_factual_question(served_platform: ServedPlatform) -> None:
    client = openai.OpenAI(base_url=f"{served_platform.base_url}/v1", api_key="unused")
    answer = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=32,
        temperature=0,
    )
    assert "Paris" in answer.choices[0].message.content


def test_curl_style_request_and_health(served_platform: ServedPlatform) -> None:
    health = httpx.get(f"{served_platform.base_url}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    response = httpx.post(
        f"{served_platform.base_url}/v1/chat/completions",
        json={
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
        },
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["x-prism-replica"]
