"""Bad input gets the right status and an OpenAI error body; the server keeps serving."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack

import pytest

from support.live_platform import LIMITED_CONCURRENCY, MODEL_ID, TENANT_KEYS, Platform

CHAT = "/v1/chat/completions"
GOOD = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture(scope="module")
def http(platform: Platform):
    with platform.http() as client:
        yield client


def assert_still_serving(http) -> None:
    response = http.post(CHAT, json=GOOD)
    assert response.status_code == 200, response.text


def test_malformed_json_is_a_400(http) -> None:
    response = http.post(CHAT, content=b'{"model": ', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"
    assert_still_serving(http)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"messages": "hello"}, "messages"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"messages": []}, "messages"),
        ({"n": 0}, "n"),
        ({"tools": [{"type": "function"}]}, None),
        ({"seed": 2**64}, "seed"),
        ({"messages": [{"role": "user", "content": "lone \ud800"}]}, "messages.0.content"),
        ({"use_beam_search": True}, "use_beam_search"),
        ({"guided_json": {"type": "object", "if": {}}}, "guided_json"),
        ({"guided_regex": "(unclosed"}, "guided_regex"),
        ({"n": 2, "best_of": 4}, None),
    ],
)
def test_invalid_fields_are_400_naming_the_field(http, change: dict, param: str | None) -> None:
    # json.dumps escapes a lone surrogate (\ud800) as JSON allows; httpx's json= would refuse it.
    body = json.dumps(GOOD | change).encode()
    response = http.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert_still_serving(http)


def test_unknown_model_is_a_404(http) -> None:
    response = http.post(CHAT, json=GOOD | {"model": "no-such-model"})
    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"


def test_prompt_over_the_context_is_a_400_streamed_or_not(http, platform: Platform) -> None:
    long_prompt = "word " * 12_000
    chat = GOOD | {"messages": [{"role": "user", "content": long_prompt}]}
    for path, body in (
        (CHAT, chat),
        (CHAT, chat | {"stream": True}),
        ("/v1/completions", {"model": MODEL_ID, "prompt": long_prompt, "max_tokens": 2}),
    ):
        response = http.post(path, json=body)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/json"
        assert error_of(response)["code"] == "context_length_exceeded"
    assert platform.wait_until_idle()["num_running"] == 0
    assert_still_serving(http)


def test_unknown_route_is_a_404_in_openai_form(http) -> None:
    response = http.get("/v1/nothing-here")
    assert response.status_code == 404
    error_of(response)


def test_a_wrong_method_is_a_405_naming_the_allowed_ones(http) -> None:
    response = http.delete("/v1/models")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    error_of(response)


def test_api_key_is_required_and_checked(platform: Platform) -> None:
    import httpx

    with httpx.Client(base_url=platform.base_url, timeout=60) as anonymous:
        missing = anonymous.post(CHAT, json=GOOD)
        wrong = anonymous.post(CHAT, json=GOOD, headers={"authorization": "Bearer nope"})
        non_ascii = anonymous.post(
            CHAT, json=GOOD, headers={"authorization": "Bearer clé-é".encode()}
        )
        docs = [anonymous.get(path) for path in ("/docs", "/openapi.json", "/redoc")]
        health = anonymous.get("/health")
    for response in (missing, wrong, non_ascii, *docs):
        assert response.status_code == 401
        assert error_of(response)["code"] == "invalid_api_key"
    assert health.status_code == 200
    with platform.http() as keyed:
        assert keyed.get("/openapi.json").json()["info"]["title"] == "Prism"


def test_a_body_over_the_limit_is_a_413_with_or_without_its_length(
    http, platform: Platform
) -> None:
    limit = platform.config.http.max_request_bytes
    body = json.dumps(GOOD | {"padding": "x" * limit}).encode()  # unknown fields are ignored
    json_type = {"content-type": "application/json"}

    sized = http.post(CHAT, content=body, headers=json_type)
    chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))
    chunked = http.post(CHAT, content=chunks, headers=json_type)  # no content-length

    for response in (sized, chunked):
        assert response.status_code == 413, response.text
        error = error_of(response)
        assert error["code"] == "request_too_large" and str(limit) in error["message"]
    assert "content-length" not in chunked.request.headers
    assert_still_serving(http)


def test_a_key_at_its_concurrency_limit_gets_a_429_until_a_stream_ends(platform: Platform) -> None:
    stream = {
        "model": MODEL_ID,
        "prompt": "Once upon a time",
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    completion = {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2}
    with platform.http(TENANT_KEYS["limited"]) as limited, ExitStack() as streams:
        reading = []  # dropping a line iterator would close its stream
        for _ in range(LIMITED_CONCURRENCY):
            response = streams.enter_context(limited.stream("POST", "/v1/completions", json=stream))
            assert response.status_code == 200
            reading.append(response.iter_lines())
            next(reading[-1])
        refused = limited.post("/v1/completions", json=completion)
        with platform.http(TENANT_KEYS["alpha"]) as other:
            assert other.post("/v1/completions", json=completion).status_code == 200
    # The streams' clients have disconnected: their slots come back.

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert error_of(refused)["code"] == "rate_limit_exceeded"
    with platform.http(TENANT_KEYS["limited"]) as limited:
        deadline = time.monotonic() + 30
        while (answer := limited.post("/v1/completions", json=completion)).status_code == 429:
            assert time.monotonic() < deadline, "the streams' slots were never given back"
            time.sleep(0.2)
        assert answer.status_code == 200
    platform.wait_until_idle()
