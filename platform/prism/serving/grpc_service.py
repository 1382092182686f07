"""The gRPC API: ``prism.v1.Generation`` and ``grpc.health.v1.Health/Check`` on the Ingress.

Serve's gRPC proxy hands each call to the Ingress method named like the RPC, so both
protocols share one tokenizer, one validation (the HTTP API's request models) and one router.
Errors get their gRPC status code from the same mapping as the HTTP statuses.

Health services: ``""`` and ``prism.v1.Generation`` are the API itself, serving whenever an
ingress replica answers; ``prism.v1.Generation/<model id>`` is one model, serving while it
has a live replica (:mod:`prism.serving.model_health`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from pydantic import BaseModel, ValidationError
from ray.serve.grpc_util import RayServegRPCContext

from prism.errors import InvalidRequest, NotFound
from prism.outputs import FinishReason
from prism.proto.stubs import pb
from prism.sampling_params import SamplingParams
from prism.serving.admission import Admission
from prism.serving.auth import Tenant
from prism.serving.errors import grpc_code, to_api_error
from prism.serving.fanout import Choice, cancel, chunks_in_arrival_order, run_to_end
from prism.serving.model_health import ModelMonitor
from prism.serving.protocol import ChatCompletionRequest, CompletionRequest, invalid_fields
from prism.serving.served_model import ServedModel

logger = logging.getLogger(__name__)

GRPC_SERVICERS = [
    "prism.proto.prism.v1.generation_pb2_grpc.add_GenerationServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]
"""What Serve's gRPC proxy registers (``gRPCOptions.grpc_servicer_functions``)."""
GENERATION_SERVICE = "prism.v1.Generation"

_OPTIONAL = ("max_tokens", "temperature", "top_p", "seed", "repetition_penalty")
_PLAIN = ("top_k", "min_p", "presence_penalty", "frequency_penalty", "min_tokens", "ignore_eos")
_STRUCTURED_FIELDS = {
    "json_schema": "json",
    "json_object": "json_object",
    "regex": "regex",
    "grammar": "grammar",
}
"""The ``structured`` oneof's fields as the HTTP API's ``structured_outputs`` keys."""
_FINISH = {
    None: pb.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.ABORT: pb.FINISH_REASON_UNSPECIFIED,
}
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Body = TypeVar("Body", bound=BaseModel)


@contextmanager
def _rpc_status(context: RayServegRPCContext) -> Iterator[None]:
    """Give an error its gRPC status code and message; Serve sends them to the client."""
    try:
        yield
    except Exception as error:
        api_error = to_api_error(error)
        if api_error.status >= 500:
            logger.error("gRPC call failed: %s", api_error.message, exc_info=error)
        context.set_code(grpc_code(api_error))
        context.set_details(api_error.message)
        raise


def sampling_fields(sampling: pb.SamplingParameters) -> dict[str, Any]:
    """The sampling message as HTTP API body fields (unset optional fields left out)."""
    fields: dict[str, Any] = {name: getattr(sampling, name) for name in _PLAIN}
    fields |= {name: getattr(sampling, name) for name in _OPTIONAL if sampling.HasField(name)}
    if sampling.stop:
        fields["stop"] = list(sampling.stop)
    if sampling.stop_token_ids:
        fields["stop_token_ids"] = list(sampling.stop_token_ids)
    structured = sampling.WhichOneof("structured")
    if structured == "choice":
        fields["structured_outputs"] = {"choice": list(sampling.choice.options)}
    elif structured is not None:
        field = _STRUCTURED_FIELDS[structured]
        fields["structured_outputs"] = {field: getattr(sampling, structured)}
    return fields


def model_of_service(service: str) -> str | None:
    """The model id a health service names (None: the service names no model)."""
    prefix, _, model_id = service.partition("/")
    return model_id if prefix == GENERATION_SERVICE and model_id else None


def _health(serving: bool) -> health_pb2.HealthCheckResponse:
    return health_pb2.HealthCheckResponse(status=_SERVING if serving else _NOT_SERVING)


def _validated(model: type[Body], fields: dict[str, Any]) -> Body:
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        raise invalid_fields(error.errors()) from None


def _prompt(request: pb.GenerateRequest) -> str | list[int]:
    kind = request.WhichOneof("prompt")
    if kind is None:
        raise InvalidRequest("prompt is required: set text or token_ids", "prompt")
    return request.text if kind == "text" else list(request.token_ids.ids)


def _usage(choice: Choice) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=choice.prompt_tokens,
        completion_tokens=len(choice.token_ids),
        cached_tokens=choice.cached_tokens,
    )


async def _responses(choice: Choice) -> AsyncIterator[pb.GenerateResponse]:
    """One message per engine step; the last carries the finish reason and the usage."""
    try:
        async for _, chunk in chunks_in_arrival_order([choice]):
            choice.absorb(chunk)
            output = chunk.output
            yield pb.GenerateResponse(
                token_ids=output.new_token_ids,
                text=output.new_text,
                finish_reason=_FINISH[output.finish_reason],
                usage=_usage(choice) if output.finished else None,
                replica=chunk.replica,
            )
    finally:
        cancel([choice])


class GenerationRPCs:
    """The RPC methods of the Ingress (which provides ``models``, ``admission``,
    ``model_health`` and ``_model``).

    A call passes the HTTP API's admission: its API key (``authorization`` metadata), the
    size limit on its message and its tenant's limit on calls in flight (a stream holds
    its slot until it ends). A client's ``request_id`` metadata names the call in Serve's
    logs and comes back in the trailing metadata; engine requests get ids of their own.
    """

    models: dict[str, ServedModel]
    admission: Admission
    model_health: ModelMonitor
    _model: Callable[[str], ServedModel]

    async def Generate(
        self, request: pb.GenerateRequest, grpc_context: RayServegRPCContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        with _rpc_status(grpc_context), self._admitted(request, grpc_context) as tenant:
            choice = await self._start_completion(request, tenant)
            async for response in _responses(choice):
                yield response

    async def Complete(
        self, request: pb.GenerateRequest, grpc_context: RayServegRPCContext
    ) -> pb.CompleteResponse:
        with _rpc_status(grpc_context), self._admitted(request, grpc_context) as tenant:
            choice = await self._start_completion(request, tenant)
            await run_to_end([choice])
            return pb.CompleteResponse(
                token_ids=choice.token_ids,
                text=choice.text,
                finish_reason=_FINISH[choice.finish_reason],
                usage=_usage(choice),
                replica=choice.first.replica if choice.first else "",
            )

    async def Chat(
        self, request: pb.ChatRequest, grpc_context: RayServegRPCContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        with _rpc_status(grpc_context), self._admitted(request, grpc_context) as tenant:
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            fields = {"model": request.model, "messages": messages}
            body = _validated(ChatCompletionRequest, fields | self._common(request))
            model = self._model(body.model)
            prompt = await model.render_chat(body.chat_messages())
            params = body.sampling_params(body.output_limit, None)
            choice = await _start_one(model, prompt, params, body.cache_salt, request, tenant)
            async for response in _responses(choice):
                yield response

    async def ListModels(
        self, request: pb.ListModelsRequest, grpc_context: RayServegRPCContext
    ) -> pb.ListModelsResponse:
        with _rpc_status(grpc_context), self._admitted(request, grpc_context):
            models = [
                pb.Model(id=model.id, created=model.created, owned_by="prism")
                for model in self.models.values()
            ]
            return pb.ListModelsResponse(models=models)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, grpc_context: RayServegRPCContext
    ) -> health_pb2.HealthCheckResponse:
        """The API (``""``, ``prism.v1.Generation``) is SERVING whenever this answers; a
        model (``prism.v1.Generation/<model id>``) while it has a live replica. No API key
        needed; any other service is NOT_FOUND."""
        with _rpc_status(grpc_context):
            if request.service in ("", GENERATION_SERVICE):
                return _health(True)
            model_id = model_of_service(request.service)
            health = None if model_id is None else (await self.model_health.current()).get(model_id)
            if health is None:
                raise NotFound(f"unknown service {request.service!r}")
            return _health(health.available)

    async def _start_completion(self, request: pb.GenerateRequest, tenant: Tenant | None) -> Choice:
        fields = {"model": request.model, "prompt": _prompt(request)}
        body = _validated(CompletionRequest, fields | self._common(request))
        model = self._model(body.model)
        prompts = await model.tokenize(body.prompts())
        params = body.sampling_params(body.max_tokens, None)
        return await _start_one(model, prompts[0], params, body.cache_salt, request, tenant)

    @staticmethod
    def _common(request: pb.GenerateRequest | pb.ChatRequest) -> dict[str, Any]:
        """The sampling fields and cache salt shared by completions and chats."""
        return sampling_fields(request.sampling) | {"cache_salt": request.cache_salt or None}

    @contextmanager
    def _admitted(
        self, request: Message, grpc_context: RayServegRPCContext
    ) -> Iterator[Tenant | None]:
        """Admit the call (see the class); the tenant's slot is held while the block runs."""
        metadata = dict(grpc_context.invocation_metadata())
        tenant = self.admission.authenticate(metadata.get("authorization"))
        self.admission.check_size(request.ByteSize())
        with self.admission.hold(tenant):
            yield tenant


async def _start_one(
    model: ServedModel,
    prompt: list[int],
    params: SamplingParams,
    cache_salt: str | None,
    request: pb.GenerateRequest | pb.ChatRequest,
    tenant: Tenant | None,
) -> Choice:
    """Route and start the call's one engine request (gRPC calls have one choice)."""
    (choice,) = await model.start(
        [prompt],
        params,
        cache_salt=cache_salt,
        session_id=request.session_id or None,
        tenant=tenant,
    )
    return choice
