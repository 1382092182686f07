"""ASGI middleware of the API: request ids, the API key, access logs and request metrics.

Plain ASGI (not Starlette's BaseHTTPMiddleware), so streamed responses and client
disconnects pass through untouched.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from prism.serving.auth import authorized
from prism.serving.errors import APIError, unauthorized
from prism.serving.metrics import IngressMetrics

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
_OPEN_PATHS = ("/health",)
"""Answered without the key; everything else (the API docs and schema included) needs it."""

Scope = dict[str, Any]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


class APIMiddleware:
    """Tags each request with an id, checks the API key, logs and counts the outcome.

    The id is the client's or Serve's ``x-request-id`` (Serve's proxy adds one and returns
    it), else a new one that this middleware returns itself.

    ``api_key`` is read from ``app.state.api_key`` on each request, so the ingress can set it
    after the app is built. The key is never logged.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._metrics: IngressMetrics | None = None

    def _metrics_now(self) -> IngressMetrics:
        if self._metrics is None:
            self._metrics = IngressMetrics()
        return self._metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER)
        request_id = given.decode(errors="replace")[:128] if given else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
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
            if self._authorized(scope, path):
                await self.app(scope, receive, send_tagged)
            else:
                state["error_type"] = "invalid_api_key"
                await _send_error(send_tagged, unauthorized())
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

    def _authorized(self, scope: Scope, path: str) -> bool:
        app_state = getattr(scope.get("app"), "state", None)
        if path in _OPEN_PATHS:
            return True
        given = (_header(scope, b"authorization") or b"").decode(errors="replace")
        return authorized(given, getattr(app_state, "api_key", None))


async def _send_error(send: Any, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
        }
    )
    await send({"type": "http.response.body", "body": body})
