"""The asyncio client of Prism's gRPC API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import grpc

from prism.client.base import ClientBase
from prism.client.messages import chat_request, generate_request, health_request, health_status
from prism.client.streams import AsyncResponseStream
from prism.proto.stubs import pb


class AsyncPrismClient(ClientBase):
    """:class:`~prism.client.PrismClient` over ``grpc.aio``: the same arguments and methods.

    Create it in the event loop that uses it. ``generate`` and ``chat`` return async
    iterators; the other methods are coroutines. A failed call raises
    ``grpc.aio.AioRpcError`` (a ``grpc.RpcError``).
    """

    open_channel = staticmethod(grpc.aio.insecure_channel)

    def generate(
        self,
        model: str,
        prompt: str | Sequence[int],
        *,
        session_id: str | None = None,
        cache_salt: str | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> AsyncResponseStream:
        """Stream the completion of a text or token-id prompt, one reply per engine step."""
        request = generate_request(
            model, prompt, session_id=session_id, cache_salt=cache_salt, **sampling
        )
        call = self._generation.Generate(request, **self._options.call(timeout))
        return AsyncResponseStream(call)

    async def complete(
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
        return await self._generation.Complete(request, **self._options.call(timeout))

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        *,
        session_id: str | None = None,
        cache_salt: str | None = None,
        timeout: float | None = None,
        **sampling: Any,
    ) -> AsyncResponseStream:
        """Stream the reply to ``messages`` (each ``{"role": ..., "content": ...}``)."""
        request = chat_request(
            model, messages, session_id=session_id, cache_salt=cache_salt, **sampling
        )
        return AsyncResponseStream(self._generation.Chat(request, **self._options.call(timeout)))

    async def list_models(self, *, timeout: float | None = None) -> list[pb.Model]:
        """The models the platform serves."""
        call = self._generation.ListModels(pb.ListModelsRequest(), **self._options.call(timeout))
        return list((await call).models)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The health status of ``service`` (default: the server), e.g. ``SERVING``."""
        reply = await self._health.Check(health_request(service), **self._options.call(timeout))
        return health_status(reply)

    async def close(self) -> None:
        """Close the channel, cancelling the calls still running on it."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
