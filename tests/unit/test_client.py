"""The gRPC client without a server: request messages, call options, errors and streams."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from prism.client import (
    SAMPLING_PARAMETERS,
    AsyncPrismClient,
    PrismClient,
    chat_request,
    describe_rpc_error,
    generate_request,
    rpc_errors,
    sampling_parameters,
)
from prism.client.messages import health_status
from prism.client.options import CallOptions
from prism.errors import PrismError
from prism.proto.stubs import pb
from prism.redis_server import free_port

EVERY_SAMPLING_PARAMETER: dict[str, Any] = {
    "max_tokens": 32,
    "temperature": 0.5,
    "top_p": 0.75,
    "top_k": 40,
    "min_p": 0.125,
    "seed": 7,
    "stop": ["\n\n", "END"],
    "stop_token_ids": [2, 3],
    "presence_penalty": 0.25,
    "frequency_penalty": -0.5,
    "repetition_penalty": 1.125,
    "min_tokens": 4,
    "ignore_eos": True,
}
USER_HI = [{"role": "user", "content": "Hi"}]


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_every_sampling_keyword_sets_its_field() -> None:
    constraints = {"json_schema", "json_object", "regex", "choice", "grammar"}
    assert set(SAMPLING_PARAMETERS) == set(EVERY_SAMPLING_PARAMETER) | constraints

    sampling = sampling_parameters(**EVERY_SAMPLING_PARAMETER)

    for name, value in EVERY_SAMPLING_PARAMETER.items():
        field = getattr(sampling, name)
        assert (list(field) if isinstance(value, list) else field) == value, name


def test_each_output_constraint_sets_the_oneof() -> None:
    by_schema = sampling_parameters(json_schema={"type": "object"})
    assert by_schema.WhichOneof("structured") == "json_schema"
    assert json.loads(by_schema.json_schema) == {"type": "object"}
    by_choice = sampling_parameters(choice=("yes", "no"))
    assert list(by_choice.choice.options) == ["yes", "no"]
    assert sampling_parameters(regex="a+").WhichOneof("structured") == "regex"
    with pytest.raises(ValueError, match="at most one output constraint"):
        sampling_parameters(regex="a+", json_object=True)


def test_sampling_keywords_left_out_or_none_stay_unset() -> None:
    sampling = sampling_parameters(temperature=None, max_tokens=8)

    assert not sampling.HasField("temperature")
    assert not sampling.HasField("seed")
    assert sampling.HasField("max_tokens")
    assert sampling == pb.SamplingParameters(max_tokens=8)


def test_a_single_stop_string_is_one_stop_sequence() -> None:
    assert list(sampling_parameters(stop="\n\n").stop) == ["\n\n"]


def test_an_unknown_sampling_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="'temprature'"):
        sampling_parameters(temprature=0.5, max_tokens=8)


def test_a_value_its_field_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError):
        sampling_parameters(max_tokens="eight")


def test_a_text_prompt_and_a_token_id_prompt_fill_their_oneof() -> None:
    text = generate_request("smol", "Once upon a time", session_id="s1", cache_salt="salt")
    tokens = generate_request("smol", [1, 2, 3], max_tokens=4)

    assert text.WhichOneof("prompt") == "text"
    assert (text.model, text.text, text.session_id, text.cache_salt) == (
        "smol",
        "Once upon a time",
        "s1",
        "salt",
    )
    assert tokens.WhichOneof("prompt") == "token_ids"
    assert list(tokens.token_ids.ids) == [1, 2, 3]
    assert tokens.sampling.max_tokens == 4
    assert (tokens.session_id, tokens.cache_salt) == ("", "")


def test_a_chat_request_keeps_the_messages_in_order() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]

    request = chat_request("smol", messages, temperature=0.0)

    assert [{"role": m.role, "content": m.content} for m in request.messages] == messages
    assert request.sampling.HasField("temperature")


@pytest.mark.parametrize(
    "message", [{"role": "user"}, {"role": "user", "content": "Hi", "name": "me"}]
)
def test_a_chat_message_needs_exactly_a_role_and_content(message: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="role and content"):
        chat_request("smol", [message])


def test_every_call_carries_the_application_key_and_metadata() -> None:
    options = CallOptions.of(60.0, "prism", "secret", [("x-request-id", "r1")])

    assert options.call(None) == {
        "timeout": 60.0,
        "metadata": (
            ("x-request-id", "r1"),
            ("application", "prism"),
            ("authorization", "Bearer secret"),
        ),
    }
    assert options.call(2.5)["timeout"] == 2.5
    assert CallOptions.of(None, None, None, ()).call(None) == {"timeout": None, "metadata": ()}


def test_a_failed_call_is_described_in_one_line() -> None:
    error = _rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "temperature: must be\n  at most 2")

    assert describe_rpc_error(error) == "INVALID_ARGUMENT: temperature: must be at most 2"
    assert describe_rpc_error(_rpc_error(grpc.StatusCode.NOT_FOUND, "")) == "NOT_FOUND"


def test_the_health_status_is_named() -> None:
    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    assert health_status(serving) == "SERVING"


def test_the_clients_refuse_an_unknown_sampling_keyword_before_calling() -> None:
    with PrismClient(f"127.0.0.1:{free_port()}") as client:
        for call in (client.generate, client.complete):
            with pytest.raises(TypeError, match="'maxtokens'"):
                call("smol", "Hi", maxtokens=8)
        with pytest.raises(TypeError, match="'maxtokens'"):
            client.chat("smol", USER_HI, maxtokens=8)

    async def refuse() -> None:
        async with AsyncPrismClient(f"127.0.0.1:{free_port()}") as client:
            with pytest.raises(TypeError, match="'maxtokens'"):
                client.generate("smol", "Hi", maxtokens=8)
            with pytest.raises(TypeError, match="'maxtokens'"):
                await client.complete("smol", [1, 2], maxtokens=8)

    asyncio.run(refuse())


def test_a_server_nobody_runs_is_unavailable_and_a_prism_error_in_one_line() -> None:
    with PrismClient(f"127.0.0.1:{free_port()}", timeout=10.0) as client:
        with pytest.raises(grpc.RpcError) as failure:
            client.list_models()
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(PrismError, match=r"^UNAVAILABLE: [^\n]+$"), rpc_errors():
            client.health()
