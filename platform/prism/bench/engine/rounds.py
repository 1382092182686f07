"""Interleaved rounds: every phase runs on each engine back to back, so drift hits both alike.

On a shared or throttled machine the speed can drift by tens of percent over minutes. Run
one engine's rounds after the other's and a slow spell lands on one side only; run each
phase on both engines in turn, with the order swapped every round, and it lands on both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from prism.bench.engine.results import EngineRun, PhaseRun
from prism.bench.memory import MemoryUse, PeakMemory

PHASES = ("single", "batch", "prefill")
"""The workload's phases, in the order each round runs them."""


@dataclass(frozen=True, slots=True)
class PhaseWork:
    """What one phase asks of an engine: these prompts at once, ``new_tokens`` each."""

    name: str
    prompts: list[list[int]]
    new_tokens: int


class Contender(Protocol):
    """An engine under measurement, already loaded."""

    load_seconds: float
    weight_bytes: int | None

    def warm_up(self) -> None:
        """One untimed run that caches nothing the timed runs could reuse."""
        ...

    def run(self, prompts: list[list[int]], new_tokens: int) -> PhaseRun:
        """Submit ``prompts`` at once and time every token until each has ``new_tokens``."""
        ...


@dataclass(slots=True)
class _Record:
    """One contender's runs so far and the most memory its load and any run added."""

    contender: Contender
    load: MemoryUse
    runs: dict[str, list[PhaseRun]] = field(default_factory=lambda: {p: [] for p in PHASES})
    largest_run_bytes: int | None = 0

    def add(self, phase: str, run: PhaseRun, memory: MemoryUse) -> None:
        self.runs[phase].append(run)
        added = _added(memory)
        if added is None or self.largest_run_bytes is None:
            self.largest_run_bytes = None
        else:
            self.largest_run_bytes = max(self.largest_run_bytes, added)

    def engine_run(self) -> EngineRun:
        """The runs, with the memory the load added plus the most one run added on top."""
        load_added = _added(self.load)
        added = None
        if load_added is not None and self.largest_run_bytes is not None:
            added = load_added + self.largest_run_bytes
        return EngineRun(
            load_seconds=self.contender.load_seconds,
            single=self.runs["single"],
            batch=self.runs["batch"],
            prefill=self.runs["prefill"],
            memory_added_bytes=added,
            weight_bytes=self.contender.weight_bytes,
        )


def _added(memory: MemoryUse) -> int | None:
    if memory.peak_bytes is None or memory.baseline_bytes is None:
        return None
    return max(0, memory.peak_bytes - memory.baseline_bytes)


def run_interleaved(
    contenders: Sequence[tuple[Contender, MemoryUse]],
    phases: Sequence[PhaseWork],
    repeats: int,
    device: torch.device,
    progress: Callable[[str], None],
) -> list[EngineRun]:
    """Warm every contender up, then run ``repeats`` rounds of ``phases`` interleaved.

    ``contenders`` pair each loaded engine with the memory its load added. Within a round
    each phase runs on every contender before the next phase starts; the contenders' order
    is reversed every other round. Each run's memory is measured on its own.
    """
    records = [_Record(contender, load) for contender, load in contenders]
    for record in records:
        record.contender.warm_up()
    for round_ in range(repeats):
        order = records[::-1] if round_ % 2 else records
        for work in phases:
            progress(f"round {round_ + 1} of {repeats}: {work.name}")
            for record in order:
                with PeakMemory(device) as memory:
                    run = record.contender.run(work.prompts, work.new_tokens)
                record.add(work.name, run, memory.use)
    return [record.engine_run() for record in records]
