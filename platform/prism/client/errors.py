"""Failed calls, in one line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, cast

import grpc

from prism.errors import PrismError


class _Status(Protocol):
    def code(self) -> grpc.StatusCode: ...

    def details(self) -> str | None: ...


def describe_rpc_error(error: grpc.RpcError) -> str:
    """The status code and the server's message of a failed call, on one line.

    For example ``INVALID_ARGUMENT: temperature: ...``. Takes the errors of both clients
    (``grpc.RpcError`` and ``grpc.aio.AioRpcError``, which carry ``code()`` and ``details()``).
    """
    status = cast(_Status, error)
    details = " ".join((status.details() or "").split())
    name = status.code().name
    return f"{name}: {details}" if details else name


@contextlib.contextmanager
def rpc_errors() -> Iterator[None]:
    """Raise a failed call as a :class:`~prism.errors.PrismError` with its one-line description."""
    try:
        yield
    except grpc.RpcError as error:
        raise PrismError(describe_rpc_error(error)) from None
