"""The ``prism.v1`` request messages, built from plain Python values."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from grpc_health.v1 import health_pb2

from prism.proto.stubs import pb

SAMPLING_PARAMETERS: tuple[str, ...] = tuple(pb.SamplingParameters.DESCRIPTOR.fields_by_name)
"""The keyword arguments :func:`sampling_parameters` takes, in the message's field order."""
CHAT_MESSAGE_KEYS = frozenset({"role", "content"})
CONSTRAINT_FIELDS = frozenset(
    field.name for field in pb.SamplingParameters.DESCRIPTOR.oneofs_by_name["structured"].fields
)


def sampling_parameters(**sampling: Any) -> pb.SamplingParameters:
    """The ``SamplingParameters`` message of ``sampling``; a value of None leaves its field unset.

    ``stop`` takes one string or a sequence of them, ``choice`` a sequence of strings, and
    ``json_schema`` a schema as a mapping or as JSON text; at most one of the output
    constraints (``json_schema``, ``json_object``, ``regex``, ``choice``, ``grammar``) may be
    given. Raises TypeError naming an unknown keyword (protobuf raises TypeError or
    ValueError for a value its field cannot hold).
    """
    unknown = [name for name in sampling if name not in SAMPLING_PARAMETERS]
    if unknown:
        raise TypeError(
            f"unknown sampling parameter {', '.join(map(repr, unknown))} "
            f"(expected {', '.join(SAMPLING_PARAMETERS)})"
        )
    fields = {name: value for name, value in sampling.items() if value is not None}
    if isinstance(fields.get("stop"), str):
        fields["stop"] = [fields["stop"]]
    if isinstance(fields.get("json_schema"), Mapping):
        fields["json_schema"] = json.dumps(fields["json_schema"])
    if "choice" in fields:
        fields["choice"] = pb.Choices(options=list(fields["choice"]))
    constraints = [name for name in fields if name in CONSTRAINT_FIELDS]
    if len(constraints) > 1:
        raise ValueError(f"at most one output constraint, got {', '.join(constraints)}")
    return pb.SamplingParameters(**fields)


def generate_request(
    model: str,
    prompt: str | Sequence[int],
    *,
    session_id: str | None = None,
    cache_salt: str | None = None,
    **sampling: Any,
) -> pb.GenerateRequest:
    """A ``Generate``/``Complete`` request: a text prompt, or a prompt of token ids."""
    request = pb.GenerateRequest(
        model=model,
        sampling=sampling_parameters(**sampling),
        session_id=session_id or "",
        cache_salt=cache_salt or "",
    )
    if isinstance(prompt, str):
        request.text = prompt
    else:
        request.token_ids.ids.extend(prompt)
    return request


def chat_message(message: Mapping[str, str]) -> pb.ChatMessage:
    """A ``ChatMessage`` of a ``{"role": ..., "content": ...}`` mapping (ValueError otherwise)."""
    if message.keys() != CHAT_MESSAGE_KEYS:
        raise ValueError(f"a chat message has the keys role and content, got {sorted(message)}")
    return pb.ChatMessage(role=message["role"], content=message["content"])


def chat_request(
    model: str,
    messages: Sequence[Mapping[str, str]],
    *,
    session_id: str | None = None,
    cache_salt: str | None = None,
    **sampling: Any,
) -> pb.ChatRequest:
    """A ``Chat`` request of a conversation, oldest message first."""
    return pb.ChatRequest(
        model=model,
        messages=[chat_message(message) for message in messages],
        sampling=sampling_parameters(**sampling),
        session_id=session_id or "",
        cache_salt=cache_salt or "",
    )


def health_request(service: str = "") -> health_pb2.HealthCheckRequest:
    """A ``grpc.health.v1`` check of ``service`` ("" asks about the server as a whole)."""
    return health_pb2.HealthCheckRequest(service=service)


def health_status(response: health_pb2.HealthCheckResponse) -> str:
    """The name of a health check's status, e.g. ``SERVING``."""
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
