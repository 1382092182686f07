"""The OpenAI API through the official client, against the real app on Ray Serve."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from prism.serving.headers import ENGINE_TTFT_METRIC, server_timing_seconds
from prism.serving.headers import PREDICTED_CACHED_HEADER as PREDICTED
from support.live_platform import MODEL_ID, TENANT_KEYS, Platform

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(platform: Platform):
    return platform.client()


def test_models_lists_the_served_model(client) -> None:
    models = client.models.list()
    assert [model.id for model in models.data] == [MODEL_ID]


def test_chat_answers_with_usage_replica_and_engine_ttft_headers(client) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=24, temperature=0
    )
    completion = raw.parse()
    assert "Paris" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 20 and 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert raw.headers["x-prism-replica"]
    assert raw.headers["x-request-id"]
    engine_ttft = server_timing_seconds(raw.headers["server-timing"], ENGINE_TTFT_METRIC)
    assert engine_ttft is not None and 0 < engine_ttft < raw.elapsed.total_seconds()


def test_streamed_chat_equals_whole_chat_and_ends_with_usage(client) -> None:
    whole = client.chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=16, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID,
            messages=QUESTION,
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_take_text_or_token_prompts_and_stream(client) -> None:
    text = client.completions.create(
        model=MODEL_ID, prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert text.choices[0].text.strip()
    assert text.choices[0].finish_reason == "length" and text.usage.completion_tokens == 6

    streamed = client.completions.create(
        model=MODEL_ID, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed) == text.choices[0].text

    tokens = client.completions.create(model=MODEL_ID, prompt=[504, 3575, 282], max_tokens=3)
    assert tokens.usage.prompt_tokens == 3


def test_n_returns_distinct_choices(client) -> None:
    completion = client.chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=12, temperature=1.0, n=2, seed=5
    )
    assert sorted(choice.index for choice in completion.choices) == [0, 1]
    texts = [choice.message.content for choice in completion.choices]
    assert all(texts) and texts[0] != texts[1]
    assert completion.usage.completion_tokens <= 2 * 12
    assert completion.usage.completion_tokens > 12 or "length" not in {
        choice.finish_reason for choice in completion.choices
    }


def test_stop_string_cuts_the_answer(client) -> None:
    completion = client.chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=24, temperature=0, stop=["Paris"]
    )
    choice = completion.choices[0]
    assert choice.message.content == "The capital of France is "
    assert choice.finish_reason == "stop"


def test_seeded_sampling_is_reproducible(client) -> None:
    def sample(seed: int) -> str:
        story = [{"role": "user", "content": "Tell me a story about a cat."}]
        completion = client.chat.completions.create(
            model=MODEL_ID, messages=story, max_tokens=24, temperature=1.0, seed=seed
        )
        return completion.choices[0].message.content

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)


def test_repeated_prompt_reports_cached_tokens(client, platform: Platform) -> None:
    """Every chat shares the template's system prompt, so a new prompt has cached tokens
    too; a repeated one is cached through its own words: all of it but its last block."""
    words = "List three fruits that are red, and say in which countries each one grows best."
    prompt = [{"role": "user", "content": words}]
    first = client.chat.completions.create(model=MODEL_ID, messages=prompt, max_tokens=4).usage
    again = client.chat.completions.create(model=MODEL_ID, messages=prompt, max_tokens=4).usage

    block_size = platform.config.models[0].engine.block_size
    assert again.prompt_tokens == first.prompt_tokens
    assert again.prompt_tokens_details.cached_tokens > first.prompt_tokens_details.cached_tokens
    assert again.prompt_tokens_details.cached_tokens >= again.prompt_tokens - block_size


def test_tenants_never_hit_each_others_cached_prefixes(platform: Platform) -> None:
    """Each API key's tenant has a cache of its own: neither the usage nor the router's
    prediction tells one tenant what another has sent."""
    prompt = "Private notes of the planning team: " + "the launch moves to the spring, " * 12

    def cached(tenant: str) -> tuple[int, str]:
        client = platform.client(api_key=TENANT_KEYS[tenant])
        raw = client.completions.with_raw_response.create(
            model=MODEL_ID, prompt=prompt, max_tokens=1
        )
        usage = raw.parse().usage
        return usage.prompt_tokens_details.cached_tokens, raw.headers.get(PREDICTED, "0")

    first, again, other, other_again = (cached(t) for t in ("alpha", "alpha", "beta", "beta"))

    assert first[0] == 0 and again[0] > 0
    assert other == (0, "0")
    assert other_again[0] == again[0]


def test_calls_with_the_same_request_id_run_side_by_side(platform: Platform) -> None:
    """A client's x-request-id names its call, and comes back; it is not the engine's id."""
    body = {"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 48, "n": 2}
    headers = {"x-request-id": "the-same-id"}

    def call(_: int) -> httpx.Response:
        with platform.http() as http:
            return http.post("/v1/completions", json=body | {"ignore_eos": True}, headers=headers)

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(call, range(2)))

    for response in responses:
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == "the-same-id"
        assert response.json()["usage"]["completion_tokens"] == 2 * 48


def test_logprobs_and_output_limit(client) -> None:
    completion = client.chat.completions.create(
        model=MODEL_ID,
        messages=QUESTION,
        max_completion_tokens=3,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    content = choice.logprobs.content
    assert len(content) == 3
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 2
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob, abs=1e-5)


def test_a_stream_silent_until_its_end_carries_pings_the_client_skips(
    client, platform: Platform
) -> None:
    """A stop string longer than the answer holds all its text back until the last chunk:
    after the opening chunk the stream is silent for the whole generation, save for pings."""
    request = {
        "model": MODEL_ID,
        "messages": QUESTION,
        "max_tokens": 24,
        "temperature": 0,
        "stop": ["~" * 1000],
        "ignore_eos": True,
        "stream": True,
    }
    with (
        platform.http() as http,
        http.stream("POST", "/v1/chat/completions", json=request) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-prism-replica"]
        lines = [line for line in response.iter_lines() if line]

    data = [i for i, line in enumerate(lines) if line.startswith("data: ")]
    assert lines[data[-1]] == "data: [DONE]" and data[-1] == len(lines) - 1
    chunks = [json.loads(lines[i].removeprefix("data: ")) for i in data[:-1]]
    opening, answer = (chunk["choices"][0]["delta"].get("content") for chunk in chunks)
    assert opening == "" and answer
    assert ": ping" in lines[data[0] + 1 : data[1]]
    assert {line for i, line in enumerate(lines) if i not in data} == {": ping"}

    extra_body = {"ignore_eos": request.pop("ignore_eos")}
    streamed = list(client.chat.completions.create(**request, extra_body=extra_body))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == answer
    assert streamed[-1].choices[0].finish_reason == "length"
