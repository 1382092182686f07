"""OpenAI request bodies: what they become as sampling settings, and how bad ones are named."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from prism.errors import InvalidRequest
from prism.sampling_params import SamplingParams
from prism.serving.protocol import ChatCompletionRequest, CompletionRequest, invalid_fields

USER = [{"role": "user", "content": "hi"}]


def refusal(model: type[BaseModel], body: dict) -> InvalidRequest:
    """The error the API reports for ``body``."""
    with pytest.raises(ValidationError) as raised:
        model.model_validate(body)
    return invalid_fields(raised.value.errors())


def test_completion_fields_become_the_engine_sampling_params() -> None:
    shared = {  # named alike in the API and the engine
        "max_tokens": 7,
        "min_tokens": 2,
        "temperature": 0.5,
        "top_k": 4,
        "top_p": 0.9,
        "min_p": 0.1,
        "seed": 3,
        "repetition_penalty": 1.2,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "stop_token_ids": [5],
        "ignore_eos": True,
        "logprobs": 2,
    }
    body = {"model": "m", "prompt": "hi", "stop": "END", **shared}
    request = CompletionRequest.model_validate(body)

    params = request.sampling_params(request.max_tokens, request.logprobs)
    assert params == SamplingParams(stop=["END"], **shared)


def test_omitted_fields_take_the_openai_defaults() -> None:
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "hi"})
    chat = ChatCompletionRequest.model_validate({"model": "m", "messages": USER})

    assert completion.sampling_params(completion.max_tokens, completion.logprobs) == (
        SamplingParams(max_tokens=16)
    )
    assert chat.sampling_params(chat.output_limit, chat.logprobs_count) == SamplingParams(
        max_tokens=None  # a chat reply may fill the context
    )
    assert (completion.n, completion.stream, completion.include_usage) == (1, False, False)


def test_chat_limits_logprobs_and_messages_map_to_what_the_engine_takes() -> None:
    def chat(**fields: object) -> ChatCompletionRequest:
        return ChatCompletionRequest.model_validate({"model": "m", "messages": USER, **fields})

    assert chat(max_tokens=9, max_completion_tokens=4).output_limit == 4
    assert chat(max_tokens=9).output_limit == 9
    assert chat().logprobs_count is None
    assert chat(logprobs=True).logprobs_count == 0
    assert chat(logprobs=True, top_logprobs=3).logprobs_count == 3
    assert chat(stream=True, stream_options={"include_usage": True}).include_usage

    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None},
    ]
    assert chat(messages=messages).chat_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ab"},
        {"role": "assistant", "content": ""},
    ]


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [
        ("text", ["text"]),
        ([1, 2], [[1, 2]]),
        ([[1], [2, 3]], [[1], [2, 3]]),
        (["a", "b"], ["a", "b"]),
    ],
)
def test_a_completion_prompt_is_one_prompt_or_a_batch(prompt: object, prompts: list) -> None:
    request = CompletionRequest.model_validate({"model": "m", "prompt": prompt})
    assert request.prompts() == prompts


def test_an_empty_prompt_list_is_refused() -> None:
    request = CompletionRequest.model_validate({"model": "m", "prompt": []})
    with pytest.raises(InvalidRequest) as raised:
        request.prompts()
    assert raised.value.param == "prompt"


@pytest.mark.parametrize(
    ("model", "fields", "param"),
    [
        (CompletionRequest, {"prompt": "x", "temperature": 2.5}, "temperature"),
        (CompletionRequest, {"prompt": "x", "top_p": 0}, "top_p"),
        (CompletionRequest, {"prompt": "x", "n": 17}, "n"),
        (CompletionRequest, {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        (CompletionRequest, {"prompt": "x", "logprobs": 21}, "logprobs"),
        (CompletionRequest, {"prompt": "x", "model": ""}, "model"),
        (ChatCompletionRequest, {"messages": []}, "messages"),
        (ChatCompletionRequest, {"messages": [{"role": "bot", "content": "x"}]}, "messages.0.role"),
        (ChatCompletionRequest, {"messages": USER, "top_logprobs": 21}, "top_logprobs"),
        (CompletionRequest, {"prompt": "x", "seed": 2**64}, "seed"),
        (CompletionRequest, {"prompt": "lone \ud800"}, "prompt"),
        (CompletionRequest, {"prompt": ["ok", "\udfff"]}, "prompt.1"),
        (CompletionRequest, {"prompt": "x", "stop": "\ud800"}, "stop"),
        (
            ChatCompletionRequest,
            {"messages": [{"role": "user", "content": "a\udc80"}]},
            "messages.0.content",
        ),
        (CompletionRequest, {"prompt": "x", "use_beam_search": True}, "use_beam_search"),
        (CompletionRequest, {"prompt": "x", "guided_json": {"type": "strnig"}}, "guided_json"),
        (CompletionRequest, {"prompt": "x", "guided_regex": "a(+"}, "guided_regex"),
        (ChatCompletionRequest, {"messages": USER, "guided_choice": [""]}, "guided_choice"),
        (ChatCompletionRequest, {"messages": USER, "guided_grammar": "g"}, "guided_grammar"),
        (
            ChatCompletionRequest,
            {"messages": USER, "structured_outputs": {"regex": "[a-"}},
            "structured_outputs.regex",
        ),
        (
            ChatCompletionRequest,
            {"messages": USER, "structured_outputs": {"whitespace_pattern": " "}},
            "structured_outputs.whitespace_pattern",
        ),
        (
            ChatCompletionRequest,
            {
                "messages": USER,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {"not": {"type": "null"}}},
                },
            },
            "response_format.json_schema.schema",
        ),
        (
            ChatCompletionRequest,
            {"messages": USER, "tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools.0.function.name",
        ),
    ],
)
def test_an_invalid_field_is_named_in_the_error(
    model: type[BaseModel], fields: dict, param: str
) -> None:
    error = refusal(model, {"model": "m", **fields})

    assert error.param == param
    assert str(error).startswith(f"{param}: ")


@pytest.mark.parametrize(
    ("model", "fields", "named"),
    [
        (CompletionRequest, {"prompt": "x", "logit_bias": {"1": 1.0}}, "logit_bias"),
        (CompletionRequest, {"prompt": "x", "echo": True}, "echo"),
        (CompletionRequest, {"prompt": "x", "suffix": "!"}, "suffix"),
        (CompletionRequest, {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (CompletionRequest, {"prompt": "x", "stream_options": {}}, "stream_options"),
        (CompletionRequest, {"prompt": "x", "n": 2, "best_of": 3}, "best_of"),
        (CompletionRequest, {"prompt": ["p"] * 33, "n": 2}, "at most 64 per call"),
        (ChatCompletionRequest, {"messages": USER, "top_logprobs": 2}, "top_logprobs"),
        (
            ChatCompletionRequest,
            {"messages": USER, "guided_regex": "a", "response_format": {"type": "json_object"}},
            "sets guided_regex, response_format",
        ),
        (
            ChatCompletionRequest,
            {"messages": USER, "guided_json": {"type": "array", "uniqueItems": True}},
            'Unimplemented keys: ["uniqueItems"]',
        ),
        (ChatCompletionRequest, {"messages": USER, "tool_choice": "required"}, "needs tools"),
        (
            ChatCompletionRequest,
            {
                "messages": USER,
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "not among the tools",
        ),
        (
            ChatCompletionRequest,
            {"messages": [{"role": "tool", "content": "42"}]},
            "tool_call_id",
        ),
    ],
)
def test_an_unsupported_feature_is_refused_by_name(
    model: type[BaseModel], fields: dict, named: str
) -> None:
    assert named in str(refusal(model, {"model": "m", **fields}))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": [[]]}, "prompt.0"),
        ({"prompt": [[1], []]}, "prompt.1"),
        ({"prompt": [[False]]}, "prompt.0.0"),
        ({"prompt": "x", "max_tokens": "5"}, "max_tokens"),
        ({"prompt": "x", "stream": "true"}, "stream"),
        ({"prompt": "x", "logprobs": False}, "logprobs"),
    ],
)
def test_a_value_of_another_json_type_or_an_empty_token_list_is_refused(
    fields: dict, param: str
) -> None:
    assert refusal(CompletionRequest, {"model": "m", **fields}).param == param


def test_a_whole_float_counts_as_an_integer() -> None:
    request = CompletionRequest.model_validate({"model": "m", "prompt": "x", "max_tokens": 2.0})
    assert request.max_tokens == 2 and isinstance(request.max_tokens, int)


def test_unknown_fields_are_ignored() -> None:
    request = CompletionRequest.model_validate({"model": "m", "prompt": "x", "service_tier": "x"})
    assert request.prompts() == ["x"]


def test_a_body_that_is_not_json_is_reported_as_such() -> None:
    with pytest.raises(ValidationError) as raised:
        CompletionRequest.model_validate_json('{"model": "m", ')
    error = invalid_fields(raised.value.errors())

    assert str(error) == "the request body is not valid JSON" and error.param is None


def test_a_batch_may_start_up_to_the_cap_of_engine_requests() -> None:
    batch = CompletionRequest.model_validate({"model": "m", "prompt": ["p"] * 32, "n": 2})
    token_ids = CompletionRequest.model_validate({"model": "m", "prompt": [7] * 100, "n": 16})
    assert len(batch.prompts()) * batch.n == 64
    assert len(token_ids.prompts()) == 1
