"""What both clients hold: the target, the options of every call and the stubs of one channel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from grpc_health.v1 import health_pb2_grpc

from prism.client.options import CallOptions
from prism.config import GRPCSettings, HTTPSettings, grpc_target
from prism.proto.stubs import rpc

DEFAULT_TARGET = grpc_target(HTTPSettings(), GRPCSettings())
"""Where ``prism serve`` listens for gRPC with its default settings."""
DEFAULT_TIMEOUT = 60.0


class ClientBase:
    """Opens the channel (``open_channel``, blocking or asyncio) and the stubs over it."""

    open_channel: Callable[[str], Any]

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        application: str | None = None,
        api_key: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.target = target
        self._options = CallOptions.of(timeout, application, api_key, metadata)
        self._channel = self.open_channel(target)
        self._generation = rpc.GenerationStub(self._channel)
        # Typed Any: the generated stub sets its methods in __init__, out of pyright's sight.
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)
