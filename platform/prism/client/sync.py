"""The blocking client of Prism's gRPC API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import grpc

from prism.client.base import ClientBase
from prism.client.messages import chat_request, generate_request, health_request, health_status
from prism.client.streams import ResponseStream
from prism.proto.stubs import pb


class PrismClient(ClientBase):
    """A client of ``prism.v1.Generation`` and ``grpc.health.v1.Health`` over one channel.

    ``timeout`` is the deadline in seconds of a call that names none (None: no deadline).
    ``application`` picks the Serve application when several run; ``api_key`` is sent as
    ``authorization: Bearer <key>``; ``metadata`` goes with every call too. Sampling
    keywords are the fields of ``SamplingParameters`` (TypeError for any other). A failed
    call raises ``grpc.RpcError``, a stream while it is iterated;
    :func:`~prism.client.describe_rpc_error` says why in one line.
    """

    open_channel = staticmethod(grpc.insecure_channel)

    def generate(
        self,
        model: str,
        prompt: str | Sequence[int],
        *,
        session_id: str | None = None,
        cache_salt: str | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> ResponseStream:
        """Stream the completion of a text or token-id prompt, one reply per engine step."""
        request = generate_request(
            model, prompt, session_id=session_id, cache_salt=cache_salt, **sampling
        )
        return ResponseStream(self._generation.Generate(request, **self._options.call(timeout)))

    def complete(
        self,
        model: str,
        prompt: str | Sequence[int],
        *,
        session_id: str | None = None,
        cache_salt: str | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> pb.CompleteResponse:
        """The whole completion of a text or token-id prompt."""
        request = generate_request(
            model, prompt, session_id=session_id, cache_salt=cache_salt, **sampling
        )
        return self._generation.Complete(request, **self._options.call(timeout))

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        *,
        session_id: str | None = None,
        cache_salt: str | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> ResponseStream:
        """Stream the reply to ``messages`` (each ``{"role": ..., "content": ...}``)."""
        request = chat_request(
            model, messages, session_id=session_id, cache_salt=cache_salt, **sampling
        )
        return ResponseStream(self._generation.Chat(request, **self._options.call(timeout)))

    def list_models(self, *, timeout: float | None = None) -> list[pb.Model]:
        """The models the platform serves."""
        reply = self._generation.ListModels(pb.ListModelsRequest(), **self._options.call(timeout))
        return list(reply.models)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The health status of ``service`` (default: the server), e.g. ``SERVING``."""
        reply = self._health.Check(health_request(service), **self._options.call(timeout))
        return health_status(reply)

    def close(self) -> None:
        """Close the channel, cancelling the calls still running on it."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
