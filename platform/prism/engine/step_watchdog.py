"""A watchdog over the engine's steps: notices one that never ends (a hung rank or device)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StepWatchdog:
    """Calls ``on_stall(seconds)`` once, from its own daemon thread, when a step outlasts
    ``timeout_s``; the step's thread is never interrupted."""

    def __init__(self, timeout_s: float, on_stall: Callable[[float], None]) -> None:
        self.timeout_s = timeout_s
        self._on_stall = on_stall
        self._began: float | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="prism-engine-watchdog", daemon=True
        )
        self._thread.start()

    @contextmanager
    def step(self) -> Iterator[None]:
        """Time the step run inside the ``with`` block."""
        self._began = time.monotonic()
        try:
            yield
        finally:
            self._began = None

    def stop(self) -> None:
        """Stop watching (returns at once)."""
        self._stopped.set()

    def _watch(self) -> None:
        period = min(1.0, self.timeout_s / 4)
        while not self._stopped.wait(period):
            began = self._began
            if began is not None and (elapsed := time.monotonic() - began) > self.timeout_s:
                self._on_stall(elapsed)
                return
