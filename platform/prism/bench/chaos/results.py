"""What a chaos run produced: the request ledger, the faults, the KV check, and its verdict.

Nothing here loads Ray, so reports and tests can build results by hand.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from prism.bench.chaos.outcomes import LedgerEntry, Outcome
from prism.bench.chaos.settings import ChaosSettings
from prism.bench.machine import Machine
from prism.bench.stats import percentile


class FaultKind(StrEnum):
    REPLICA_KILL = "replica_kill"
    REDIS_RESTART = "redis_restart"
    STEP_FAULT = "step_fault"


FAULT_NAMES = {
    FaultKind.REPLICA_KILL: "replica kill",
    FaultKind.REDIS_RESTART: "Redis restart",
    FaultKind.STEP_FAULT: "engine step fault",
}


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One fault: when it struck (seconds since the load started) and what it hit."""

    kind: FaultKind
    at: float
    seconds: float
    """How long injecting it took, waits included (it began ``seconds`` before ``at``)."""
    target: str | None
    error: str | None
    """Why it could not be injected (None when it was)."""


@dataclass(frozen=True, slots=True)
class ReplicaKV:
    """A replica's last stats in the KV check."""

    replica_id: str
    used_blocks: int
    running: int
    waiting: int

    @property
    def idle(self) -> bool:
        return self.running == 0 and self.waiting == 0


@dataclass(frozen=True, slots=True)
class KVCheck:
    """The replicas' KV blocks once the load is over."""

    expected_replicas: int
    replicas: list[ReplicaKV]
    """The last stats of each replica seen."""

    @property
    def settled(self) -> bool:
        """Whether every replica the deployment should have was seen idle."""
        seen_all = len(self.replicas) >= self.expected_replicas
        return seen_all and all(replica.idle for replica in self.replicas)

    @property
    def leaked_blocks(self) -> int:
        return sum(replica.used_blocks for replica in self.replicas)


@dataclass(frozen=True, slots=True)
class ChaosResult:
    model: str
    replicas: int
    settings: ChaosSettings
    ledger: list[LedgerEntry]
    faults: list[FaultEvent]
    kv: KVCheck
    machine: Machine
    date: str


@dataclass(frozen=True, slots=True)
class ChaosSummary:
    """The ledger's counts by outcome, the faults by kind, and the KV check."""

    requests: int
    accepted: int
    completed: int
    cancelled: int
    retryable: int
    failed: int
    lost: int
    ttft_p99: float | None
    """Over every request that received text."""
    faults: dict[str, int]
    """Faults injected, by kind."""
    faults_not_injected: int
    leaked_kv_blocks: int
    kv_settled: bool

    @property
    def problems(self) -> list[str]:
        """What makes the run fail: lost requests, non-retryable failures, leaked blocks."""
        found = []
        if self.lost:
            found.append(f"{self.lost} lost")
        if self.failed:
            found.append(f"{self.failed} failed with a non-retryable error")
        if self.leaked_kv_blocks:
            found.append(f"{self.leaked_kv_blocks} KV blocks still used")
        if not self.kv_settled:
            found.append("the replicas never all came back idle")
        return found


def summarize(result: ChaosResult) -> ChaosSummary:
    outcomes = Counter(entry.outcome for entry in result.ledger)
    injected = Counter(fault.kind for fault in result.faults if fault.error is None)
    ttfts = [entry.ttft for entry in result.ledger if entry.ttft is not None]
    return ChaosSummary(
        requests=len(result.ledger),
        accepted=sum(entry.accepted for entry in result.ledger),
        completed=outcomes[Outcome.COMPLETED],
        cancelled=outcomes[Outcome.CANCELLED],
        retryable=outcomes[Outcome.RETRYABLE],
        failed=outcomes[Outcome.FAILED],
        lost=outcomes[Outcome.LOST],
        ttft_p99=percentile(ttfts, 99),
        faults={kind.value: injected[kind] for kind in FaultKind},
        faults_not_injected=sum(fault.error is not None for fault in result.faults),
        leaked_kv_blocks=result.kv.leaked_blocks,
        kv_settled=result.kv.settled,
    )
