"""ASGI middleware of the API: request ids, admission (API key, body size, the tenant's
requests in flight), access logs and request metrics.

Plain ASGI (not Starlette's BaseHTTPMiddleware), so streamed responses and client
disconnects pass through untouched.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any

from prism.errors import PrismError
from prism.serving.admission import Admission
from prism.serving.errors import APIError, to_api_error
from prism.serving.metrics import IngressMetrics

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
_OPEN_PATHS = ("/health",)
"""Answered without the key; everything else (the API docs and schema included) needs it."""

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


async def _read_body(scope: Scope, receive: Receive, admission: Admission) -> Receive:
    """Read the whole body, refusing one over the size limit; return a ``receive`` that
    replays it, then passes on what comes later (a disconnect).

    A ``content-length`` over the limit is refused before anything is read; the bytes are
    counted as they come in any case (a chunked body has no length).
    """
    length = _header(scope, b"content-length")
    if length is not None and length.isdigit():
        admission.check_size(int(length))
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        admission.check_size(size)
        if not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


class APIMiddleware:
    """Tags each request with an id, admits it, logs and counts the outcome.

    The id is the client's or Serve's ``x-request-id`` (Serve's proxy adds one and returns
    it), else a new one that this middleware returns itself. It names the call in logs; the
    engine requests get ids of their own.

    Admission is read from ``app.state.admission`` on each request, so the ingress can set
    it after the app is built. A request passes with a valid API key (the tenant goes into
    ``scope["state"]["tenant"]``), a free slot of its tenant, which it holds until its
    response (a stream included) has ended, and a body within the limit. Keys are never
    logged.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._metrics: IngressMetrics | None = None

    def _metrics_now(self) -> IngressMetrics:
        if self._metrics is None:
            self._metrics = IngressMetrics()
        return self._metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER)
        request_id = given.decode(errors="replace")[:128] if given else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["tenant"] = None
        path = scope["path"]
        started = time.monotonic()
        status = 500

        async def send_tagged(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if given is None:  # behind Serve's proxy the header is always there already
                    headers = [
                        *message.get("headers", []),
                        (REQUEST_ID_HEADER, request_id.encode()),
                    ]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            with ExitStack() as held:
                try:
                    receive = await self._admit(scope, receive, held)
                except PrismError as refused:
                    error = to_api_error(refused)
                    state["error_type"] = error.type
                    await _send_error(send_tagged, error)
                else:
                    await self.app(scope, receive, send_tagged)
        finally:
            self._metrics_now().observe(path, status, state.get("error_type"))
            logger.info(
                "request %s %s %s -> %d in %.3fs",
                request_id,
                scope["method"],
                path,
                status,
                time.monotonic() - started,
            )

    @staticmethod
    async def _admit(scope: Scope, receive: Receive, held: ExitStack) -> Receive:
        """Check the key, the body's size and the tenant's slots; ``held`` keeps the slot.

        Returns the ``receive`` the app reads the (already read) body from.
        """
        admission: Admission | None = getattr(scope["app"].state, "admission", None)
        if admission is None or scope["path"] in _OPEN_PATHS:
            return receive
        authorization = (_header(scope, b"authorization") or b"").decode(errors="replace")
        tenant = admission.authenticate(authorization)
        held.enter_context(admission.hold(tenant))  # before the body: it bounds buffered bodies
        scope["state"]["tenant"] = tenant
        return await _read_body(scope, receive, admission)


async def _send_error(send: Any, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json")]
    headers += [(name.encode(), value.encode()) for name, value in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
