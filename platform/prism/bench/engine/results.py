"""What the engine benchmark measures, as plain records derived the same way for both engines."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prism.bench.engine.workload import Workload
from prism.bench.machine import Machine
from prism.bench.stats import Percentiles, Spread


@dataclass(frozen=True, slots=True)
class PhaseRun:
    """One timed run of a phase: every request submitted at once, each token timed.

    ``seconds`` runs from submission to the last token. ``ttft`` is each request's time to
    its first token; ``tpot`` each request's mean time per output token after the first;
    ``itl`` every gap between two consecutive tokens of a request. ``cached_tokens`` of the
    ``prompt_tokens`` were served from a prefix cache (always 0 for HF).
    """

    num_requests: int
    output_tokens: int
    prompt_tokens: int
    cached_tokens: int
    seconds: float
    ttft: Percentiles
    tpot: Percentiles
    itl: Percentiles

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds

    @property
    def decode_tokens_per_second(self) -> float | None:
        """The median request's decode rate: 1 / its time per output token."""
        return None if not self.tpot.p50 else 1.0 / self.tpot.p50


def phase_run(
    submitted: float, token_times: Sequence[Sequence[float]], prompt_tokens: int, cached: int
) -> PhaseRun:
    """Derive a phase's measures from the time each request received each output token."""
    ttfts = [times[0] - submitted for times in token_times]
    tpots = [(times[-1] - times[0]) / (len(times) - 1) for times in token_times if len(times) > 1]
    itls = [b - a for times in token_times for a, b in itertools.pairwise(times)]
    return PhaseRun(
        num_requests=len(token_times),
        output_tokens=sum(len(times) for times in token_times),
        prompt_tokens=prompt_tokens,
        cached_tokens=cached,
        seconds=max(times[-1] for times in token_times) - submitted,
        ttft=Percentiles.of(ttfts),
        tpot=Percentiles.of(tpots),
        itl=Percentiles.of(itls),
    )


@dataclass(frozen=True, slots=True)
class EngineRun:
    """One engine's runs: its load time, memory, and each repetition of each phase.

    ``single``: prompt 0 alone; ``batch``: every prompt at once; ``prefill``: the long
    prompt alone, for one token (its TTFT is the prefill time). ``memory_added_bytes`` is
    what loading the engine added to the process (RSS, or GPU allocation on CUDA) plus the
    most any one of its runs added on top; None where that cannot be measured.
    ``weight_bytes`` is what the model's weights take as stored (quantized ones included).
    """

    load_seconds: float
    single: list[PhaseRun]
    batch: list[PhaseRun]
    prefill: list[PhaseRun]
    memory_added_bytes: int | None
    weight_bytes: int | None = None

    def spread(self, phase: str, measure: Callable[[PhaseRun], float | None]) -> Spread | None:
        """``measure`` over the repetitions of ``phase`` (None if any run lacks it)."""
        values = [measure(run) for run in getattr(self, phase)]
        if any(value is None for value in values):
            return None
        return Spread.of([value for value in values if value is not None])


def batch_tokens_per_second(run: PhaseRun) -> float:
    return run.tokens_per_second


def decode_tokens_per_second(run: PhaseRun) -> float | None:
    return run.decode_tokens_per_second


def ttft_p50(run: PhaseRun) -> float | None:
    return run.ttft.p50


@dataclass(frozen=True, slots=True)
class EngineBenchResult:
    """Prism's engine against the Hugging Face ``generate`` baseline on one workload.

    ``prism_weight_dtype`` differs from ``dtype`` only in the mixed-precision extra, where
    Prism's matrices are stored in another dtype than the baseline's; ``prism_quantization``
    (``int8``, ``int4``) names Prism's weight-only quantization, the baseline staying in
    ``dtype``.
    """

    date: str
    machine: Machine
    model_id: str
    dtype: str
    prism_weight_dtype: str
    prism_threads: int
    hf_threads: int | None
    workload: Workload
    prompt_tokens: list[int]
    prism: EngineRun
    hf: EngineRun | None
    prism_quantization: str = "none"

    @property
    def mixed_precision(self) -> bool:
        return self.prism_weight_dtype != self.dtype

    @property
    def quantized(self) -> bool:
        return self.prism_quantization != "none"

    @property
    def weight_ratio(self) -> float | None:
        """Prism's weight bytes over HF's (None without both)."""
        if self.hf is None or not self.hf.weight_bytes or self.prism.weight_bytes is None:
            return None
        return self.prism.weight_bytes / self.hf.weight_bytes

    def ratio(self, phase: str, measure: Callable[[PhaseRun], float | None]) -> float | None:
        """Prism's median of ``measure`` over HF's (None without the baseline)."""
        if self.hf is None:
            return None
        prism, hf = self.prism.spread(phase, measure), self.hf.spread(phase, measure)
        if prism is None or hf is None or prism.median is None or not hf.median:
            return None
        return prism.median / hf.median

    @property
    def batch_ratio(self) -> float | None:
        """Prism's batch output tokens/s over HF's (medians)."""
        return self.ratio("batch", batch_tokens_per_second)

    @property
    def single_decode_ratio(self) -> float | None:
        """Prism's batch-1 decode tokens/s over HF's (medians)."""
        return self.ratio("single", decode_tokens_per_second)

    @property
    def prefill_time_ratio(self) -> float | None:
        """Prism's long-prompt prefill time over HF's (medians; lower is better)."""
        return self.ratio("prefill", ttft_p50)
