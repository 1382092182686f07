"""Prism's errors as the APIs report them: HTTP status, OpenAI error body, headers, gRPC code."""

from __future__ import annotations

import grpc
import pytest

from prism.errors import ContextTooLong, Overloaded, StepFailed, Unauthorized
from prism.serving.admission import RequestTooLarge, TooManyRequests
from prism.serving.errors import grpc_code, to_api_error


@pytest.mark.parametrize(
    ("error", "status", "code", "headers", "grpc_status"),
    [
        (
            StepFailed("step 7 failed", ("r1",)),
            503,
            None,
            {"retry-after": "1"},
            grpc.StatusCode.UNAVAILABLE,
        ),
        (
            RequestTooLarge("too big"),
            413,
            "request_too_large",
            {},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        (
            TooManyRequests("at the limit"),
            429,
            "rate_limit_exceeded",
            {"retry-after": "1"},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        (
            Overloaded("full"),
            429,
            "overloaded",
            {"retry-after": "1"},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        (
            Unauthorized("no key"),
            401,
            "invalid_api_key",
            {"www-authenticate": "Bearer"},
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            ContextTooLong("long", "prompt"),
            400,
            "context_length_exceeded",
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (RuntimeError("bug"), 500, None, {}, grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_has_its_status_headers_and_grpc_code(
    error: Exception,
    status: int,
    code: str | None,
    headers: dict[str, str],
    grpc_status: grpc.StatusCode,
) -> None:
    api_error = to_api_error(error)

    assert (api_error.status, api_error.code) == (status, code)
    assert api_error.headers() == headers
    assert grpc_code(api_error) == grpc_status
    assert "step 7" not in api_error.message and "bug" not in api_error.message
