"""Requests sent one after another from a thread, every outcome recorded with its times."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Outcome:
    """One request: when it was sent and ended (monotonic seconds) and how it ended."""

    started: float
    ended: float
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200

    def within(self, start: float, end: float) -> bool:
        return start <= self.started and self.ended <= end


class SteadyTraffic:
    """POSTs ``body`` to ``url`` back to back until stopped (or ``max_requests`` sent).

    A request that gets no answer within ``timeout`` seconds counts as failed, with the
    error that ended it.
    """

    def __init__(
        self, url: str, body: dict, timeout: float = 10.0, max_requests: int = 20_000
    ) -> None:
        self.url = url
        self.body = body
        self.timeout = timeout
        self.max_requests = max_requests
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-traffic", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            for _ in range(self.max_requests):
                if self._stop.is_set():
                    return
                started = time.monotonic()
                try:
                    response = client.post(self.url, json=self.body)
                    status, error = response.status_code, None
                    if response.status_code != 200:
                        error = response.text[:300]
                except httpx.HTTPError as failure:
                    status, error = None, f"{type(failure).__name__}: {failure}"
                with self._lock:
                    self._outcomes.append(Outcome(started, time.monotonic(), status, error))

    def start(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)
        assert not self._thread.is_alive(), "the traffic thread did not stop"
        return self.outcomes()

    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def wait_for_answers(self, count: int, since: float, timeout: float) -> None:
        """Wait until ``count`` requests sent after ``since`` were answered with 200."""
        deadline = time.monotonic() + timeout
        while sum(o.ok and o.started >= since for o in self.outcomes()) < count:
            assert self._thread.is_alive(), "the traffic thread ended"
            if time.monotonic() > deadline:
                recent = [o for o in self.outcomes() if o.started >= since][-3:]
                raise AssertionError(f"fewer than {count} answers in {timeout} s: {recent}")
            time.sleep(0.05)
