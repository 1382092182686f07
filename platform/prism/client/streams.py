"""The replies of a streaming call (``Generate``, ``Chat``), as they arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

from grpc.aio import EOF  # pyright: ignore[reportAttributeAccessIssue]: set by grpc's Cython core

from prism.proto.stubs import pb


class _CallStream:
    """A streaming call that is cancelled when asked, or when dropped before its end."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def cancel(self) -> None:
        """Cancel the call, which aborts the request on the server (no-op once it ended)."""
        self._call.cancel()

    def __del__(self) -> None:
        self.cancel()


class ResponseStream(_CallStream, Iterator[pb.GenerateResponse]):
    """The replies of a call of :class:`~prism.client.PrismClient`, for one iteration.

    Iterating raises ``grpc.RpcError`` if the call fails. Leaving a ``with`` block, calling
    :meth:`cancel` or dropping the stream before its end cancels the call.
    """

    def __next__(self) -> pb.GenerateResponse:
        return next(self._call)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class AsyncResponseStream(_CallStream, AsyncIterator[pb.GenerateResponse]):
    """The replies of a call of :class:`~prism.client.AsyncPrismClient`, for one iteration.

    Iterating raises ``grpc.aio.AioRpcError`` if the call fails. Leaving an ``async with``
    block, calling :meth:`cancel` or dropping the stream before its end cancels the call.
    """

    async def __anext__(self) -> pb.GenerateResponse:
        response = await self._call.read()
        if response is EOF:
            raise StopAsyncIteration
        return response

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()
