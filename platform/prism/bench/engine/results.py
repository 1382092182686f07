"""What the engine benchmark measures, as plain records (derived rates are properties)."""

from __future__ import annotations

from dataclasses import dataclass

from prism.bench.engine.workload import Workload
from prism.bench.machine import Machine
from prism.bench.memory import MemoryUse


@dataclass(frozen=True, slots=True)
class BatchRun:
    """Every request submitted at once; ``seconds`` runs from submission to the last token."""

    num_requests: int
    output_tokens: int
    seconds: float
    ttft_mean_seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds


@dataclass(frozen=True, slots=True)
class SingleRun:
    """One request alone: time to its first token, then the time for the remaining tokens."""

    output_tokens: int
    ttft_seconds: float
    decode_seconds: float

    @property
    def decode_tokens_per_second(self) -> float:
        return (self.output_tokens - 1) / self.decode_seconds


@dataclass(frozen=True, slots=True)
class EngineRun:
    """One engine's whole phase: loading, the batch, single and prefill runs, its memory.

    ``prefill_seconds``: Prism's time to the first token of the long prompt; HF's time for
    one forward pass over it.
    """

    load_seconds: float
    batch: BatchRun
    single: SingleRun
    prefill_seconds: float
    memory: MemoryUse


@dataclass(frozen=True, slots=True)
class EngineBenchResult:
    """Prism's engine against the Hugging Face ``generate`` baseline on one workload."""

    date: str
    machine: Machine
    model_id: str
    dtype: str
    prism_weight_dtype: str
    workload: Workload
    prompt_tokens: list[int]
    prism: EngineRun
    hf: EngineRun | None

    @property
    def batch_ratio(self) -> float | None:
        """Prism's batch output tokens/s over HF's (None without the baseline)."""
        if self.hf is None:
            return None
        return self.prism.batch.tokens_per_second / self.hf.batch.tokens_per_second

    @property
    def single_decode_ratio(self) -> float | None:
        """Prism's batch-1 decode tokens/s over HF's (None without the baseline)."""
        if self.hf is None:
            return None
        return self.prism.single.decode_tokens_per_second / self.hf.single.decode_tokens_per_second
