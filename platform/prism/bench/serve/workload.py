"""What the serving benchmark sends and where: its workload, the target server, the protocols.

Nothing here loads a client library, so the command line can declare its options from it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TIMEOUT_SECONDS = 300.0
PROTOCOLS = ("http", "grpc")


@dataclass(frozen=True, slots=True)
class ServeTarget:
    """The server under load: its ``protocol`` (one of :data:`PROTOCOLS`), its ``address``
    (the OpenAI API base URL, or the gRPC API's ``host:port``) and the API key."""

    protocol: str
    address: str
    api_key: str


@dataclass(frozen=True, slots=True)
class ServeWorkload:
    """``num_requests`` streamed chat completions of ``prompt_set``, ``concurrency`` at a time,
    each greedy for exactly ``max_tokens`` tokens; before them, ``lone_requests`` sent one at
    a time (:mod:`prism.bench.serve.lone`; HTTP only)."""

    num_requests: int
    concurrency: int
    max_tokens: int
    prompt_set: str
    lone_requests: int
