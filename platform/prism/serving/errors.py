"""The one place where Prism's errors become API errors: an HTTP status with an OpenAI error
body, and the matching gRPC status code."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from prism.errors import (
    ContextTooLong,
    EngineDead,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    Overloaded,
    RankLost,
    StepFailed,
    Unauthorized,
)
from prism.serving.admission import RequestTooLarge, TooManyRequests

RETRY_AFTER_S = 1
"""What ``retry-after`` says on a 429 or 503: worth trying again soon."""


@dataclass(frozen=True, slots=True)
class APIError:
    """An error as the API reports it: HTTP status and the OpenAI error body fields."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None

    def headers(self) -> dict[str, str]:
        """HTTP headers of the error response: the scheme a 401 wants, ``retry-after`` when
        a retry may succeed."""
        if self.status == 401:
            return {"www-authenticate": "Bearer"}
        return {"retry-after": str(RETRY_AFTER_S)} if self.status in (429, 503) else {}

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def as_prism_error(error: BaseException) -> BaseException:
    """Prism's own error behind ``error``: Ray's wrapper removed, Serve's errors translated.

    Serve's backpressure and unavailability errors must become Prism errors before they
    leave a route: Serve installs its own plain-text handlers for them on the app.
    """
    while isinstance(error, RayTaskError) and error.cause is not None:
        error = error.cause
    if isinstance(error, BackPressureError):
        return Overloaded("the model's request queue is full")
    if isinstance(error, DeploymentUnavailableError):
        return EngineDead("the model's replicas are unavailable")
    if isinstance(error, RayActorError):  # the replica died or is unreachable mid-request
        return EngineDead("the model replica serving this request stopped")
    return error


def to_api_error(error: BaseException) -> APIError:
    """Map any exception to its API form; unknown ones are internal errors (details hidden)."""
    error = as_prism_error(error)
    match error:
        case ContextTooLong():
            return APIError(
                400, str(error), "invalid_request_error", "context_length_exceeded", error.param
            )
        case InvalidRequest():
            return APIError(400, str(error), "invalid_request_error", None, error.param)
        case ModelNotFound():
            return APIError(404, str(error), "invalid_request_error", "model_not_found", "model")
        case NotFound():
            return APIError(404, str(error), "not_found_error")
        case Unauthorized():
            return APIError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                "invalid_request_error",
                "invalid_api_key",
            )
        case RequestTooLarge():
            return APIError(413, str(error), "invalid_request_error", "request_too_large")
        case TooManyRequests():
            return APIError(429, str(error), "rate_limit_error", "rate_limit_exceeded")
        case Overloaded():
            return APIError(
                429, "the server is overloaded; retry later", "overloaded_error", "overloaded"
            )
        case RankLost():
            return APIError(
                503,
                "the model replica lost one of its tensor-parallel ranks; retry later",
                "service_unavailable",
            )
        case StepFailed():
            return APIError(
                503,
                "the model failed while running this request; retry it",
                "service_unavailable",
            )
        case EngineDead():
            return APIError(503, "the model is unavailable; retry later", "service_unavailable")
        case _:
            return APIError(500, "internal server error", "internal_error")


_GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def grpc_code(error: APIError) -> grpc.StatusCode:
    """The gRPC status code of an API error (INTERNAL for anything unexpected)."""
    return _GRPC_CODES.get(error.status, grpc.StatusCode.INTERNAL)
