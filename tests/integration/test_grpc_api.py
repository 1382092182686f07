"""The gRPC API through a real channel to Serve's gRPC proxy, against the HTTP API's answers."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from prism.client import PrismClient
from prism.conversation import ChatSession, converse, grpc_replies
from prism.models import load_tokenizer, resolve_model
from prism.proto.stubs import pb, rpc
from prism.serving.app import APP_NAME
from support.live_platform import (
    API_KEY,
    LIMITED_CONCURRENCY,
    MAX_NUM_SEQS,
    MAX_QUEUED,
    MODEL_ID,
    TENANT_KEYS,
    Platform,
)

QUESTION = "What is the capital of France?"
STATEMENT = "The capital of France is"
SEEDED = {"temperature": 0.8, "seed": 7, "max_tokens": 24}
IGNORE_EOS = {"ignore_eos": True}


@pytest.fixture(scope="module")
def channel(platform: Platform) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(platform.grpc_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> rpc.GenerationStub:
    return rpc.GenerationStub(channel)


def streamed(
    responses: Iterator[pb.GenerateResponse],
) -> tuple[str, list[int], pb.GenerateResponse]:
    """The text and token ids of a stream, and its last message."""
    messages = list(responses)
    text = "".join(message.text for message in messages)
    tokens = [token for message in messages for token in message.token_ids]
    return text, tokens, messages[-1]


def test_list_models(stub: rpc.GenerationStub, platform: Platform) -> None:
    reply = stub.ListModels(pb.ListModelsRequest(), metadata=platform.grpc_metadata, timeout=30)

    assert [model.id for model in reply.models] == [MODEL_ID]
    assert reply.models[0].owned_by == "prism" and reply.models[0].created > 0


def test_generate_and_complete_equal_the_http_completion(
    stub: rpc.GenerationStub, platform: Platform
) -> None:
    http = platform.client().completions.create(
        model=MODEL_ID, prompt=QUESTION, **SEEDED, extra_body=IGNORE_EOS
    )
    request = pb.GenerateRequest(
        model=MODEL_ID, text=QUESTION, sampling=pb.SamplingParameters(**SEEDED, **IGNORE_EOS)
    )

    text, tokens, last = streamed(stub.Generate(request, metadata=platform.grpc_metadata))
    whole = stub.Complete(request, metadata=platform.grpc_metadata, timeout=60)

    assert text == whole.text == http.choices[0].text
    assert tokens == list(whole.token_ids)
    assert len(tokens) == http.usage.completion_tokens
    assert last.finish_reason == whole.finish_reason == pb.FINISH_REASON_LENGTH
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens == http.usage.prompt_tokens
    assert last.usage.completion_tokens == len(tokens)
    assert last.replica == whole.replica != ""


def test_token_id_prompts_generate_like_text_prompts(
    stub: rpc.GenerationStub, platform: Platform
) -> None:
    prompt_ids = load_tokenizer(resolve_model(None).path).encode(STATEMENT)
    greedy = pb.SamplingParameters(temperature=0, max_tokens=8)

    by_text = stub.Complete(
        pb.GenerateRequest(model=MODEL_ID, text=STATEMENT, sampling=greedy),
        metadata=platform.grpc_metadata,
    )
    by_ids = stub.Complete(
        pb.GenerateRequest(model=MODEL_ID, token_ids=pb.TokenIds(ids=prompt_ids), sampling=greedy),
        metadata=platform.grpc_metadata,
    )

    assert by_ids.text == by_text.text != ""
    assert by_ids.usage.prompt_tokens == len(prompt_ids)


def test_chat_equals_the_http_chat_completion(stub: rpc.GenerationStub, platform: Platform) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    http = platform.client().chat.completions.create(
        model=MODEL_ID, messages=messages, **SEEDED, extra_body=IGNORE_EOS
    )
    request = pb.ChatRequest(
        model=MODEL_ID,
        messages=[pb.ChatMessage(**message) for message in messages],
        sampling=pb.SamplingParameters(**SEEDED, **IGNORE_EOS),
    )

    text, _, last = streamed(stub.Chat(request, metadata=platform.grpc_metadata, timeout=60))

    assert text == http.choices[0].message.content
    assert last.usage.prompt_tokens == http.usage.prompt_tokens
    assert last.usage.completion_tokens == http.usage.completion_tokens


def test_constraints_hold_over_grpc_as_over_http(
    stub: rpc.GenerationStub, platform: Platform
) -> None:
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string", "maxLength": 20}},
        "required": ["capital"],
        "additionalProperties": False,
    }
    seeded = {"temperature": 1.0, "seed": 11, "max_tokens": 40}
    http = platform.client().completions.create(
        model=MODEL_ID, prompt=QUESTION, **seeded, extra_body={"guided_json": schema}
    )
    by_schema = pb.GenerateRequest(
        model=MODEL_ID,
        text=QUESTION,
        sampling=pb.SamplingParameters(**seeded, json_schema=json.dumps(schema)),
    )
    by_choice = pb.ChatRequest(
        model=MODEL_ID,
        messages=[pb.ChatMessage(role="user", content=QUESTION)],
        sampling=pb.SamplingParameters(choice=pb.Choices(options=["Paris", "Rome"])),
    )

    whole = stub.Complete(by_schema, metadata=platform.grpc_metadata, timeout=60)
    text, _, last = streamed(stub.Chat(by_choice, metadata=platform.grpc_metadata, timeout=60))

    assert whole.text == http.choices[0].text
    assert set(json.loads(whole.text)) == {"capital"}
    assert text in ("Paris", "Rome") and last.finish_reason == pb.FINISH_REASON_STOP


def test_health_reports_the_api_and_each_model_and_refuses_unknown_services(
    channel: grpc.Channel, platform: Platform
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    metadata = (platform.grpc_metadata[0],)  # probes send no API key

    for service in ("", "prism.v1.Generation", f"prism.v1.Generation/{MODEL_ID}"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), metadata=metadata)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    for unknown in ("nope.Service", "prism.v1.Generation/no-such-model", MODEL_ID):
        with pytest.raises(grpc.RpcError) as refused:
            health.Check(health_pb2.HealthCheckRequest(service=unknown), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")

    (reply,) = list(reflection.ServerReflectionInfo(iter([ask]), timeout=30))

    names = {service.name for service in reply.list_services_response.service}
    assert {"prism.v1.Generation", "grpc.health.v1.Health"} <= names


def call_status(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code(), refused.value.details()


@pytest.mark.parametrize(
    ("request_fields", "code", "details"),
    [
        ({"model": "no-such-model", "text": "Hi"}, "NOT_FOUND", "'no-such-model' does not exist"),
        (
            {"model": MODEL_ID, "text": "Hi", "sampling": {"temperature": 5}},
            "INVALID_ARGUMENT",
            "temperature: Input should be less than or equal to 2",
        ),
        ({"model": MODEL_ID}, "INVALID_ARGUMENT", "prompt is required"),
        ({"model": MODEL_ID, "text": ""}, "INVALID_ARGUMENT", "prompt must not be empty"),
        (
            {"model": MODEL_ID, "text": "word " * 12_000},
            "INVALID_ARGUMENT",
            "this model's context is",
        ),
        (
            {"model": MODEL_ID, "text": "Hi", "sampling": {"stop": ["a", "b", "c", "d", "e"]}},
            "INVALID_ARGUMENT",
            "at most 4 stop sequences",
        ),
        (
            {"model": MODEL_ID, "text": "Hi", "sampling": {"regex": "[z-a]"}},
            "INVALID_ARGUMENT",
            "structured_outputs.regex: the regex cannot be enforced",
        ),
    ],
)
def test_bad_requests_get_their_status_code_and_the_server_keeps_serving(
    stub: rpc.GenerationStub, platform: Platform, request_fields: dict, code: str, details: str
) -> None:
    fields = dict(request_fields)
    sampling = pb.SamplingParameters(**fields.pop("sampling", {}))
    request = pb.GenerateRequest(**fields, sampling=sampling)

    unary = functools.partial(stub.Complete, request, metadata=platform.grpc_metadata)
    streaming = functools.partial(stub.Generate, request, metadata=platform.grpc_metadata)
    for call in (unary, lambda: list(streaming())):
        status, message = call_status(call)
        assert status == getattr(grpc.StatusCode, code)
        assert details in message

    assert platform.wait_until_idle()["num_running"] == 0
    still = stub.Complete(
        pb.GenerateRequest(model=MODEL_ID, text=STATEMENT), metadata=platform.grpc_metadata
    )
    assert still.usage.completion_tokens > 0


def test_a_missing_or_wrong_api_key_is_unauthenticated(
    stub: rpc.GenerationStub, platform: Platform
) -> None:
    application = platform.grpc_metadata[0]
    for metadata in ((application,), (application, ("authorization", "Bearer wrong"))):
        status, message = call_status(
            lambda metadata=metadata: stub.ListModels(pb.ListModelsRequest(), metadata=metadata)
        )
        assert status == grpc.StatusCode.UNAUTHENTICATED
        assert "API key" in message


def test_overload_is_resource_exhausted_and_the_rest_are_served(platform: Platform) -> None:
    request = pb.ChatRequest(
        model=MODEL_ID,
        messages=[pb.ChatMessage(role="user", content="Write a long story about a lighthouse.")],
        sampling=pb.SamplingParameters(max_tokens=48, ignore_eos=True),
    )

    async def one(stub: rpc.GenerationStub) -> grpc.StatusCode:
        try:
            async for _ in stub.Chat(request, metadata=platform.grpc_metadata, timeout=120):
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def burst() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(platform.grpc_target) as channel:
            stub = rpc.GenerationStub(channel)
            return await asyncio.gather(*(one(stub) for _ in range(3 * MAX_NUM_SEQS)))

    codes = asyncio.run(burst())
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) > 0
    assert codes.count(grpc.StatusCode.OK) >= MAX_NUM_SEQS + MAX_QUEUED
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    platform.wait_until_idle()


def test_cancelling_a_stream_aborts_the_request_and_frees_its_blocks(
    stub: rpc.GenerationStub, platform: Platform
) -> None:
    request = pb.GenerateRequest(
        model=MODEL_ID,
        text="Once upon a time",
        sampling=pb.SamplingParameters(max_tokens=400, ignore_eos=True),
    )
    stream = stub.Generate(request, metadata=platform.grpc_metadata, timeout=120)
    for received, _ in enumerate(stream, start=1):
        if received == 4:
            break
    assert platform.engine_stats()["num_running"] == 1

    stream.cancel()

    stats = platform.wait_until_idle(timeout=20)
    assert stats["num_free_kv_blocks"] == stats["num_kv_blocks"]
    assert stats["num_running"] == 0


def test_leaving_a_client_stream_early_cancels_it_and_frees_its_blocks(platform: Platform) -> None:
    with PrismClient(platform.grpc_target, application=APP_NAME, api_key=API_KEY) as client:
        stream = client.generate(MODEL_ID, "Once upon a time", max_tokens=400, ignore_eos=True)
        with stream:
            replies = [next(stream) for _ in range(3)]
            assert platform.engine_stats()["num_running"] == 1

    assert all(reply.token_ids for reply in replies)
    stats = platform.wait_until_idle(timeout=20)
    assert stats["num_free_kv_blocks"] == stats["num_kv_blocks"]


def test_a_grpc_chat_reports_a_refused_message_in_one_line_and_goes_on(platform: Platform) -> None:
    lines = iter(["word " * 12_000, QUESTION])
    errors: list[str] = []
    out = io.StringIO()

    def read_line(prompt: str) -> str:
        line = next(lines, None)
        if line is None:
            raise EOFError
        return line

    with PrismClient(platform.grpc_target, application=APP_NAME, api_key=API_KEY) as client:
        session = ChatSession(grpc_replies(client, MODEL_ID, temperature=0.0, max_tokens=32))
        converse(session, read_line, out, errors.append, prompt="")

    assert len(errors) == 1 and errors[0].startswith("INVALID_ARGUMENT: ")
    assert "context" in errors[0]
    assert out.getvalue() == "The capital of France is Paris.\n"
    assert [message["content"] for message in session.history] == [
        QUESTION,
        "The capital of France is Paris.",
    ]


def test_tenants_never_hit_each_others_cached_prefixes(
    stub: rpc.GenerationStub, platform: Platform
) -> None:
    text = "Minutes of the board meeting, not for circulation: " + "revenue grew again, " * 12
    request = pb.GenerateRequest(
        model=MODEL_ID, text=text, sampling=pb.SamplingParameters(max_tokens=1)
    )

    def cached(tenant: str) -> int:
        metadata = platform.grpc_metadata_of(TENANT_KEYS[tenant])
        return stub.Complete(request, metadata=metadata, timeout=60).usage.cached_tokens

    first, again, other = (cached(tenant) for tenant in ("alpha", "alpha", "beta"))

    assert first == 0 and again > 0
    assert other == 0


def test_calls_with_the_same_request_id_run_side_by_side(
    stub: rpc.GenerationStub, platform: Platform
) -> None:
    """The client's request id names the call and comes back; it is not the engine's id."""
    request = pb.GenerateRequest(
        model=MODEL_ID,
        text="Once upon a time",
        sampling=pb.SamplingParameters(max_tokens=48, ignore_eos=True),
    )
    metadata = (*platform.grpc_metadata, ("request_id", "the-same-id"))

    calls = [stub.Complete.future(request, metadata=metadata, timeout=120) for _ in range(2)]

    for call in calls:
        assert call.result().usage.completion_tokens == 48
        assert ("request_id", "the-same-id") in call.trailing_metadata()


def test_a_message_over_the_size_limit_is_resource_exhausted(
    stub: rpc.GenerationStub, platform: Platform
) -> None:
    limit = platform.config.http.max_request_bytes
    request = pb.GenerateRequest(model=MODEL_ID, text="x" * limit)

    status, message = call_status(
        lambda: stub.Complete(request, metadata=platform.grpc_metadata, timeout=60)
    )

    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"limit of {limit} bytes" in message


def test_a_key_at_its_concurrency_limit_is_resource_exhausted_until_a_stream_ends(
    stub: rpc.GenerationStub, platform: Platform
) -> None:
    metadata = platform.grpc_metadata_of(TENANT_KEYS["limited"])
    long = pb.GenerateRequest(
        model=MODEL_ID,
        text="Once upon a time",
        sampling=pb.SamplingParameters(max_tokens=400, ignore_eos=True),
    )
    short = pb.GenerateRequest(
        model=MODEL_ID, text="Hi", sampling=pb.SamplingParameters(max_tokens=2)
    )
    streams = [
        stub.Generate(long, metadata=metadata, timeout=120) for _ in range(LIMITED_CONCURRENCY)
    ]
    for stream in streams:
        next(stream)

    status, message = call_status(lambda: stub.Complete(short, metadata=metadata, timeout=60))
    for stream in streams:
        stream.cancel()

    assert status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "requests in flight" in message
    deadline = time.monotonic() + 30
    while True:
        try:
            assert stub.Complete(short, metadata=metadata, timeout=60).usage.completion_tokens
            break
        except grpc.RpcError as refused:
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "the streams' slots were never given back"
            time.sleep(0.2)
    platform.wait_until_idle()
