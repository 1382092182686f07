"""How each chaos request ended, and the rules that sort it.

A request is *accepted* once the server answers 200 and the stream starts. It then ends in
exactly one :class:`Outcome`: completed (a ``finish_reason`` arrived and the stream closed
cleanly), cancelled (the client closed it on purpose), failed with a retryable error (HTTP
429 or 503 before the stream, or an SSE ``error`` event of a retryable type in it), failed
otherwise, or lost: accepted, then neither completed nor errored (the stream ended early or
broke, or hung past the request timeout). A request never accepted and never answered with
an error (no connection, no answer in time) counts as failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

RETRYABLE_STATUSES = frozenset({429, 503})
RETRYABLE_ERROR_TYPES = frozenset({"overloaded_error", "rate_limit_error", "service_unavailable"})
"""The OpenAI error ``type`` of Prism's 429 and 503 answers, as an SSE error event carries it."""


class Outcome(StrEnum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    RETRYABLE = "retryable"
    FAILED = "failed"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class ServerError:
    """An error the server answered with: an HTTP status before the stream, or an SSE error
    event in it (``status`` None)."""

    status: int | None
    type: str | None
    message: str

    @property
    def retryable(self) -> bool:
        """Whether a client may send the request again and expect it to work."""
        if self.status is not None:
            return self.status in RETRYABLE_STATUSES
        return self.type in RETRYABLE_ERROR_TYPES

    def describe(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "error event"
        return f"{where} {self.type or 'untyped'}: {self.message}"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One request's line in the ledger. Times are seconds since the load started."""

    sent_at: float
    ended_at: float
    outcome: Outcome
    accepted: bool
    ttft: float | None
    chunks: int
    replica: str | None
    detail: str | None
    """Why it did not complete (None when it did)."""


@dataclass(slots=True)
class Observation:
    """What the client saw of one request while it ran."""

    sent_at: float
    accepted: bool = False
    replica: str | None = None
    first_chunk_at: float | None = None
    chunks: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    error: ServerError | None = None
    broken: str | None = None
    """Why the connection failed, if it did."""
    timed_out_after: float | None = None

    def chunk(self, at: float) -> None:
        """A chunk carrying text arrived at ``at``."""
        if self.first_chunk_at is None:
            self.first_chunk_at = at
        self.chunks += 1

    def classify(self) -> tuple[Outcome, str | None]:
        """The request's outcome, and why it did not complete."""
        if self.cancelled:
            return Outcome.CANCELLED, f"closed by the client after {self.chunks} chunks"
        if self.error is not None:
            kind = Outcome.RETRYABLE if self.error.retryable else Outcome.FAILED
            return kind, self.error.describe()
        if self.timed_out_after is not None:
            why = f"not over within {self.timed_out_after:g} s"
        elif self.broken is not None:
            why = f"connection failed: {self.broken}"
        elif self.finish_reason is not None:
            return Outcome.COMPLETED, None
        else:
            why = "the stream ended without a finish_reason"
        return (Outcome.LOST if self.accepted else Outcome.FAILED), why

    def settle(self, ended_at: float) -> LedgerEntry:
        """The ledger entry of the request, which ended at ``ended_at``."""
        outcome, detail = self.classify()
        first = self.first_chunk_at
        return LedgerEntry(
            sent_at=self.sent_at,
            ended_at=ended_at,
            outcome=outcome,
            accepted=self.accepted,
            ttft=None if first is None else first - self.sent_at,
            chunks=self.chunks,
            replica=self.replica,
            detail=detail,
        )
