"""Tool calling without a server: the request fields, the prompt, the grammar and the parser."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import jsonschema
import pytest

from prism.engine import AsyncEngine, FinishReason, LLMEngine, SamplingParams
from prism.models import apply_chat_template, load_tokenizer
from prism.routing.hint import RoutingHint
from prism.serving.fanout import start_choices
from prism.serving.protocol import ChatCompletionRequest
from prism.serving.responses import ResponseBuilder
from prism.serving.tool_calls import ToolCallParser, whole_output
from prism.serving.tools import template_inputs, template_knows_tools, without_tool_roles
from support.engine_streams import InProcessReplica
from support.engines import engine_config

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 10}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
NAMES = {"get_weather", "get_time"}
USER = [{"role": "user", "content": "Weather in Paris?"}]
TWO_CALLS = (
    "Let me check.<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
    "</tool_call>\n<tool_call>\n"
    '{"name":"get_time","arguments":{"zone":"CET"}}\n</tool_call>'
)


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": USER, "tools": [WEATHER, TIME]} | fields
    )


def no_hint(prompt: list[int]) -> RoutingHint:
    return RoutingHint([], len(prompt), 16)


def streamed(parser: ToolCallParser, text: str, piece: int) -> tuple[str, dict[int, dict]]:
    """Content and calls as a client accumulates them from deltas of ``piece`` characters."""
    content, calls = "", {}
    parts = [parser.feed(text[i : i + piece]) for i in range(0, len(text), piece)]
    for parsed in [*parts, parser.finish()]:
        content += parsed.content
        for delta in parsed.calls:
            call = calls.setdefault(delta.index, {"name": None, "arguments": ""})
            if delta.id is not None:
                assert call["name"] is None, "a call's id and name come once, first"
                call["name"] = delta.name
            call["arguments"] += delta.arguments
    return content, calls


@pytest.mark.parametrize("stream_arguments", [True, False])
@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_streamed_calls_add_up_to_the_whole_reply(stream_arguments: bool, piece: int) -> None:
    content, calls = whole_output(ToolCallParser(NAMES, stream_arguments), TWO_CALLS)
    got_content, got_calls = streamed(ToolCallParser(NAMES, stream_arguments), TWO_CALLS, piece)

    assert content == got_content == "Let me check.\n"
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        (call["name"], call["arguments"]) for call in got_calls.values()
    ]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert calls[1]["function"]["arguments"] == '{"zone":"CET"}'  # as generated
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)


def test_enforced_arguments_stream_before_the_block_closes() -> None:
    parser = ToolCallParser(NAMES, stream_arguments=True)
    head = parser.feed('<tool_call>\n{"name":"get_time","arguments":{"zone":"C')
    assert [(d.name, d.arguments) for d in head.calls] == [("get_time", ""), (None, '{"zone":"C')]
    tail = parser.feed('ET"}}\n</tool_call>')
    assert [d.arguments for d in tail.calls] == ['ET"}']


@pytest.mark.parametrize(
    "block",
    [
        '<tool_call>{"name": "delete_all", "arguments": {}}</tool_call>',
        "<tool_call>{not json}</tool_call>",
        '<tool_call>{"name": "get_time", "arguments": "zone"}</tool_call>',
        '<tool_call>{"name": "get_time", "arguments": {}',
    ],
)
def test_what_is_no_call_of_an_offered_tool_stays_content(block: str) -> None:
    content, calls = whole_output(ToolCallParser(NAMES, stream_arguments=False), "Hi " + block)
    assert calls == [] and content == "Hi " + block


def test_a_partial_marker_is_held_back_then_released() -> None:
    parser = ToolCallParser(NAMES, stream_arguments=False)
    assert parser.feed("a <tool_").content == "a "
    assert parser.feed("box>").content == "<tool_box>"
    assert parser.feed(" <tool").content == " "
    assert parser.finish().content == "<tool"


def test_tool_choice_decides_what_is_offered_and_enforced() -> None:
    assert chat().offered_tools and not chat().tool_calls_enforced
    assert chat().constraint() is None
    assert chat(tool_choice="none").offered_tools == []
    assert chat(tool_choice="none").constraint() is None
    required = chat(tool_choice="required").constraint()
    assert required is not None and "get_time" in required.spec and "call)*" in required.spec
    single = chat(tool_choice="required", parallel_tool_calls=False).constraint()
    assert single is not None and "call)*" not in single.spec
    named = chat(tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [t.function.name for t in named.offered_tools] == ["get_time"]
    named_grammar = named.constraint()
    assert named_grammar is not None and "get_weather" not in named_grammar.spec


def test_templates_without_tools_get_them_in_the_system_message() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "tools": [WEATHER],
            "messages": [
                *USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"},
            ],
        }
    )
    messages = without_tool_roles(request.chat_messages(), request.offered_tools)

    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert '"name": "get_weather"' in messages[0]["content"]
    assert "<tool_call>" in messages[0]["content"]
    assert messages[2]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert messages[3]["content"] == "<tool_response>\n21 C, sunny\n</tool_response>"
    assert not template_knows_tools("{{ messages }}")
    assert template_knows_tools("{% if tools %}{{ tools | tojson }}{% endif %}")


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_time"}}]
)
def test_the_call_grammar_makes_even_noise_a_valid_call(
    tiny_chat_model: Path, choice: object
) -> None:
    request = chat(tool_choice=choice)
    engine = LLMEngine(
        "tiny-chat",
        tiny_chat_model,
        engine_config(num_kv_blocks=96, num_threads=1),
        load_tokenizer(tiny_chat_model),
    )
    schemas = {t.function.name: t.function.parameter_schema() for t in request.offered_tools}
    for seed in range(4):
        params = SamplingParams(max_tokens=150, seed=seed, structured=request.constraint())
        engine.add_request(str(seed), [1, 2, 3], params)
    texts: dict[str, str] = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            texts[output.request_id] = texts.get(output.request_id, "") + output.new_text
            if output.finished:
                assert output.finish_reason is FinishReason.STOP, texts[output.request_id]

    for text in texts.values():
        content, calls = whole_output(ToolCallParser(set(schemas), True), text)
        assert content is None and calls, text
        for call in calls:
            jsonschema.validate(
                json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]]
            )


HERMES_TEMPLATE = (
    "{% if tools %}<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools>"
    "{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for call in m.tool_calls %}<tool_call>"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}'
    "</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n"
)
"""A chat template that renders tools the way Hermes-style templates do."""


def test_a_template_that_knows_tools_renders_them_itself(smollm2_tokenizer) -> None:
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = HERMES_TEMPLATE
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "tools": [WEATHER],
            "messages": [
                *USER,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
        }
    )
    messages, offered = template_inputs(
        tokenizer.chat_template, request.chat_messages(), request.offered_tools
    )
    text = tokenizer.decode(apply_chat_template(tokenizer, messages, offered))

    assert '"name": "get_weather"' in text.split("</tools>")[0]
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>' in text
    assert "<|im_start|>tool\nsunny<|im_end|>" in text
    assert "You can call functions" not in text  # no fallback prompt


@pytest.fixture(scope="module")
def chat_replica(tiny_chat_model: Path):
    config = engine_config(num_kv_blocks=96, num_threads=1)
    engine = LLMEngine("tiny-chat", tiny_chat_model, config, load_tokenizer(tiny_chat_model))
    front = AsyncEngine(engine)
    yield InProcessReplica(front, "replica-t")
    front.shutdown()


def test_streamed_chunks_and_the_whole_body_carry_the_same_calls(chat_replica) -> None:
    request = chat(tool_choice="required", n=2, seed=5, max_tokens=150)
    params = request.sampling_params(request.output_limit, None)
    tokenizer = chat_replica.engine.engine.tokenizer

    async def body_and_chunks() -> tuple[dict, list[dict]]:
        builder = ResponseBuilder("chatcmpl", "tiny", tokenizer, False, False, request.tool_calling)
        choices = await start_choices(chat_replica.send, [[1, 2, 3]], params, 2, None, no_hint)
        body = await builder.chat_body(choices)
        builder = ResponseBuilder("chatcmpl", "tiny", tokenizer, False, False, request.tool_calling)
        choices = await start_choices(chat_replica.send, [[1, 2, 3]], params, 2, None, no_hint)
        events = [json.loads(event.data) async for event in builder.chat_events(choices)]
        return body, events

    body, chunks = asyncio.run(body_and_chunks())

    for index, choice in enumerate(body["choices"]):
        deltas = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        calls: dict[int, dict] = {}
        for delta in deltas:
            assert "content" not in delta["delta"] or delta["delta"]["content"] == ""
            for piece in delta["delta"].get("tool_calls", []):
                call = calls.setdefault(piece["index"], {"name": None, "arguments": ""})
                if "id" in piece:
                    call["name"] = piece["function"]["name"]
                call["arguments"] += piece["function"]["arguments"]
        whole = [
            (c["function"]["name"], c["function"]["arguments"])
            for c in choice["message"]["tool_calls"]
        ]
        assert whole == [(c["name"], c["arguments"]) for c in calls.values()]
        assert choice["message"]["content"] is None
        assert choice["finish_reason"] == deltas[-1]["finish_reason"] == "tool_calls"
