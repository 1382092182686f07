"""Bad input gets the right status and an OpenAI error body; the server keeps serving."""

from __future__ import annotations

import json

import pytest

from support.live_platform import MODEL_ID, Platform

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
        ({"guided_json": {"type": "object"}}, "guided_json"),
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
