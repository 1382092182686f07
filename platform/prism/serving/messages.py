"""The messages between the ingress and a model replica, over Serve's handle call.

Both sides import this module, and neither imports the other: the ingress never loads the
engine, and the replica never loads the HTTP or gRPC front ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from prism.outputs import RequestOutput
from prism.routing.hint import RoutingHint
from prism.sampling_params import SamplingParams


@dataclass(slots=True)
class GenerateRequest:
    """What the ingress hands a replica: tokens and settings, already validated for shape."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    cache_salt: str | None = None
    routing: RoutingHint | None = None
    """Read (and annotated) by the router in the ingress's process."""


@dataclass(slots=True)
class GenerateChunk:
    """One streamed step of a request, tagged with the replica that produced it."""

    output: RequestOutput
    replica: str
    first_token_seconds: float | None = None
    """On the chunk carrying the first token: seconds from the request's arrival at the
    replica to that token (the engine's TTFT, queueing included)."""
