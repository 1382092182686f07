"""Typed errors of the Prism core.

Each serving front end maps these to its protocol (HTTP status, gRPC code) in one place.
"""

from __future__ import annotations


class PrismError(Exception):
    """Base class of every error Prism raises on purpose."""


class InvalidRequest(PrismError):
    """The request cannot be served as given (a bad field, an impossible value).

    ``param`` names the offending field when one is to blame.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextTooLong(InvalidRequest):
    """The prompt, or prompt plus requested output, exceeds the model's context."""


class NotFound(PrismError):
    """The thing a request names does not exist."""


class ModelNotFound(NotFound):
    """No model of that name is known or its files cannot be found."""


class Unauthorized(PrismError):
    """The request lacks the API key, or brings a wrong one."""


class IncompatibleSettings(PrismError, ValueError):
    """Engine settings the model cannot run with, e.g. a tensor-parallel size that does not
    divide its heads."""


class Overloaded(PrismError):
    """The engine refuses new work until some of its queue drains."""


class EngineDead(PrismError):
    """The engine's step loop stopped; no request can make progress."""


class RankLost(EngineDead):
    """A tensor-parallel rank of the engine died or stopped answering; the replica is done."""


class StepFailed(PrismError):
    """An engine step failed and ended the requests it was running; the engine goes on
    serving the others, so the request may be retried.

    ``request_ids`` names the requests the failed step ended.
    """

    def __init__(self, message: str, request_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.request_ids = request_ids
