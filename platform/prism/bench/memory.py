"""Peak memory of one benchmark phase.

On CUDA this is torch's peak allocation on the device. On Linux CPUs it is the process's
resident-set high-water mark (``VmHWM``), reset at the start of the phase by writing ``5``
to ``/proc/self/clear_refs``, after handing the heap pages freed by the previous phase back
to the system (glibc's ``malloc_trim``); the phase's own share is the peak minus the baseline.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK_RSS = "5"


@dataclass(frozen=True, slots=True)
class MemoryUse:
    """Bytes in use when a phase started and at its peak (None where unmeasurable)."""

    baseline_bytes: int | None
    peak_bytes: int | None


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes; None off Linux."""
    try:
        lines = _STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0]) * 1024
    return None


def _trim_heap() -> None:
    """Return freed heap memory to the system where the C library can (glibc).

    Elsewhere the baseline may include memory the previous phase freed.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


class PeakMemory:
    """A context manager that records :class:`MemoryUse` for the code it wraps."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.use = MemoryUse(None, None)
        self._baseline: int | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            _trim_heap()
            # Without the reset, the peak covers the whole process so far.
            with contextlib.suppress(OSError):
                _CLEAR_REFS.write_text(_RESET_PEAK_RSS)
            self._baseline = _status_bytes("VmRSS")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_bytes("VmHWM")
        self.use = MemoryUse(self._baseline, peak)
