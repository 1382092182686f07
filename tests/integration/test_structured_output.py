"""Structured output and tool calls with SmolLM2, through the official openai client."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from support.live_platform import MAX_NUM_SEQS, MODEL_ID, Platform

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                },
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "age", "address"],
        "additionalProperties": False,
    },
    "order": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "maxLength": 8},
                        "quantity": {"type": "integer", "minimum": 1, "maximum": 9},
                    },
                    "required": ["sku", "quantity"],
                    "additionalProperties": False,
                },
            },
            "priority": {"enum": ["low", "normal", "high"]},
        },
        "required": ["items", "priority"],
        "additionalProperties": False,
    },
    "weather": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "temperature": {"type": "number", "minimum": -50, "maximum": 60, "multipleOf": 0.5},
        },
        "required": ["city", "unit", "temperature"],
        "additionalProperties": False,
    },
    "review": {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 10},
                "minItems": 1,
                "maxItems": 4,
            },
            "score": {"type": "number", "minimum": 0, "maximum": 5, "multipleOf": 0.5},
            "recommended": {"type": "boolean"},
        },
        "required": ["tags", "score", "recommended"],
        "additionalProperties": False,
    },
    "event": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 24},
            "day": {"type": "integer", "minimum": 1, "maximum": 31},
            "attendees": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "maxLength": 12},
                        "role": {"enum": ["host", "guest"]},
                    },
                    "required": ["name", "role"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["title", "day", "attendees"],
        "additionalProperties": False,
    },
}
SAMPLES_PER_CALL = 5
"""Choices per call (``n``): within what the test platform's replica queues."""
CONCURRENT_CALLS = MAX_NUM_SEQS
"""Calls in flight at once: the test platform's batch."""
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER_TOOL, TIME_TOOL]
ASK_WEATHER = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def client(platform: Platform) -> openai.OpenAI:
    return platform.client()


def ask(name: str) -> list[dict]:
    return [{"role": "user", "content": f"Write a {name} as JSON."}]


def json_format(name: str) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True},
    }


def test_fifty_requests_over_five_schemas_all_validate(client: openai.OpenAI) -> None:
    def sample(call: tuple[str, int]) -> str:
        name, seed = call
        completion = client.chat.completions.create(
            model=MODEL_ID,
            messages=ask(name),
            response_format=json_format(name),
            temperature=1.0,
            max_tokens=250,
            seed=seed,
        )
        assert completion.choices[0].finish_reason == "stop"
        return completion.choices[0].message.content

    calls = [(name, seed) for name in SCHEMAS for seed in range(10)]
    with ThreadPoolExecutor(CONCURRENT_CALLS) as pool:
        texts = list(pool.map(sample, calls))

    assert len(texts) == 50
    for (name, _), text in zip(calls, texts, strict=True):
        jsonschema.validate(json.loads(text), SCHEMAS[name])


@pytest.mark.parametrize(
    ("constraint", "holds"),
    [
        (
            {"structured_outputs": {"regex": r"[A-Z][a-z]{2,9} [0-9]{2,4}"}},
            lambda text: re.fullmatch(r"[A-Z][a-z]{2,9} [0-9]{2,4}", text),
        ),
        (
            {"guided_choice": ["Paris", "London", "Berlin"]},
            lambda text: text in ("Paris", "London", "Berlin"),
        ),
    ],
    ids=["regex", "choice"],
)
def test_fifty_samples_hold_a_regex_or_a_choice(client: openai.OpenAI, constraint, holds) -> None:
    question = [{"role": "user", "content": "Name a European capital and a number."}]
    texts = []
    for seed in range(10):
        completion = client.chat.completions.create(
            model=MODEL_ID,
            messages=question,
            temperature=1.0,
            max_tokens=20,
            n=SAMPLES_PER_CALL,
            seed=seed,
            extra_body=constraint,
        )
        texts += [c.message.content for c in completion.choices]
    assert len(texts) == 50
    assert all(holds(text) for text in texts), texts


def test_streamed_and_whole_replies_agree_for_a_seed(client: openai.OpenAI) -> None:
    settings = {
        "model": MODEL_ID,
        "messages": ask("review"),
        "response_format": json_format("review"),
        "temperature": 1.0,
        "seed": 1234,
        "max_tokens": 200,
    }
    whole = client.chat.completions.create(**settings).choices[0].message.content
    chunks = client.chat.completions.create(**settings, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole
    jsonschema.validate(json.loads(whole), SCHEMAS["review"])


def test_json_object_and_the_completions_api(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Describe Paris as a JSON object."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=300,
    )
    assert isinstance(json.loads(chat.choices[0].message.content), dict)
    completion = client.completions.create(
        model=MODEL_ID,
        prompt="A weather report as JSON:",
        max_tokens=200,
        seed=5,
        extra_body={"guided_json": SCHEMAS["weather"]},
    )
    jsonschema.validate(json.loads(completion.choices[0].text), SCHEMAS["weather"])


def test_an_unenforceable_schema_is_a_400_naming_its_field(client: openai.OpenAI) -> None:
    unsupported = {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=MODEL_ID,
            messages=ask("thing"),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "thing", "schema": unsupported},
            },
        )
    error = raised.value.body
    assert error["param"] == "response_format.json_schema.schema"
    assert "not" in error["message"]


def tool_schema(name: str) -> dict:
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


def assert_valid_calls(message) -> None:
    assert message.tool_calls
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), tool_schema(call.function.name))


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "get_time"}}],
    ids=["required", "named"],
)
def test_forced_tool_calls_are_valid_and_stream_like_whole_ones(
    client: openai.OpenAI, tool_choice
) -> None:
    settings = {
        "model": MODEL_ID,
        "messages": ASK_WEATHER,
        "tools": TOOLS,
        "tool_choice": tool_choice,
        "parallel_tool_calls": False,
        "temperature": 1.0,
        "seed": 99,
        "max_tokens": 150,
    }
    whole = client.chat.completions.create(**settings).choices[0]
    with client.chat.completions.stream(**settings) as stream:
        accumulated = stream.get_final_completion().choices[0]

    assert whole.finish_reason == accumulated.finish_reason == "tool_calls"
    assert_valid_calls(whole.message)
    assert_valid_calls(accumulated.message)
    if isinstance(tool_choice, dict):
        assert [c.function.name for c in whole.message.tool_calls] == ["get_time"]
    assert [(c.function.name, c.function.arguments) for c in whole.message.tool_calls] == [
        (c.function.name, c.function.arguments) for c in accumulated.message.tool_calls
    ]
    assert whole.message.content is None


def test_a_tool_result_comes_back_into_the_conversation(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL_ID,
        messages=ASK_WEATHER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=100,
    ).choices[0]
    (call,) = first.message.tool_calls
    history = [
        *ASK_WEATHER,
        first.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "celsius": 31}'},
    ]
    second = client.chat.completions.create(
        model=MODEL_ID, messages=history, tools=TOOLS, temperature=0, max_tokens=60
    ).choices[0]

    assert second.message.content
    assert second.finish_reason in ("stop", "length")
    assert "sunny" in second.message.content.lower() or "31" in second.message.content
