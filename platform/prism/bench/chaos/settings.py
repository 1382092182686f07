"""What the chaos benchmark plays: the load, the faults and how long it waits for calm.

Nothing here loads Ray or a client library, so the command line can build settings with it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    """The load and the fault schedule; an interval of 0 turns that fault off."""

    duration_s: float = 300.0
    concurrency: int = 8
    max_tokens: int = 16
    cancel_share: float = 0.2
    """The share of requests the client closes after ``cancel_after_chunks`` text chunks."""
    cancel_after_chunks: int = 3
    kill_every_s: float = 60.0
    redis_restart_every_s: float = 45.0
    fault_every_s: float = 30.0
    request_timeout_s: float = 60.0
    """A request not over by then is lost (if accepted) or failed (if not)."""
    settle_timeout_s: float = 180.0
    """How long to wait, after the load, for every replica to be up and idle."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens <= self.cancel_after_chunks:
            raise ValueError(
                f"max_tokens ({self.max_tokens}) must exceed the {self.cancel_after_chunks} "
                "chunks after which a cancelled request is closed"
            )


def fault_times(every_s: float, duration_s: float) -> list[float]:
    """When a fault repeated every ``every_s`` seconds strikes during the load (none for 0)."""
    if every_s <= 0:
        return []
    count = int(duration_s // every_s)
    times = [every_s * step for step in range(1, count + 1)]
    return [at for at in times if at < duration_s]
