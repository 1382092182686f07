"""A load whose number of closed-loop streaming clients changes while it runs.

Each client sends its next chat request as soon as its previous one ends. Shrinking the
load lets the clients it removes finish the request they have in flight; nothing is cut
off. :class:`BackgroundLoad` runs the clients on an event loop of their own, so synchronous
code (the autoscaling benchmark, tests) can resize it and watch the platform meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from prism.bench.serve.load import RequestRecord, StreamChat, send_request
from prism.bench.serve.prompts import Messages

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TimedRecord:
    """One request, with when it was sent (seconds since the load started)."""

    sent_at: float
    record: RequestRecord


class ClientPool:
    """Closed-loop clients over ``stream``, cycling through ``prompts``."""

    def __init__(
        self, stream: StreamChat, prompts: list[Messages], max_tokens: int, timeout_s: float
    ) -> None:
        self._stream = stream
        self._prompts = itertools.cycle(prompts)
        self._max_tokens = max_tokens
        self._timeout_s = timeout_s
        self._clients: list[tuple[asyncio.Task, asyncio.Event]] = []
        self._retired: list[asyncio.Task] = []
        self.started = time.monotonic()
        self.records: list[TimedRecord] = []

    def resize(self, clients: int) -> None:
        """Run ``clients`` clients from now on; removed ones finish their current request."""
        while len(self._clients) > clients:
            task, stop = self._clients.pop()
            stop.set()
            self._retired.append(task)
        while len(self._clients) < clients:
            stop = asyncio.Event()
            self._clients.append((asyncio.create_task(self._client(stop)), stop))

    async def close(self) -> None:
        """Stop every client and wait for the requests in flight."""
        self.resize(0)
        await asyncio.gather(*self._retired)

    async def _client(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            sent_at = time.monotonic() - self.started
            record = await send_request(
                self._stream, next(self._prompts), self._max_tokens, self._timeout_s
            )
            self.records.append(TimedRecord(sent_at, record))


class BackgroundLoad:
    """A :class:`ClientPool` on its own thread; a context manager that closes it on exit.

    ``make_stream`` is called on that thread, so clients bound to an event loop (the OpenAI
    and gRPC async clients) are created on the loop they run on.
    """

    def __init__(
        self,
        make_stream: Callable[[], StreamChat],
        prompts: list[Messages],
        max_tokens: int,
        timeout_s: float = 120.0,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def create() -> ClientPool:
            return ClientPool(make_stream(), prompts, max_tokens, timeout_s)

        self._pool = self._call(create())

    @property
    def started(self) -> float:
        """When the load started, on the ``time.monotonic`` clock."""
        return self._pool.started

    def resize(self, clients: int) -> None:
        async def resize() -> None:
            self._pool.resize(clients)

        self._call(resize())

    def records(self) -> list[TimedRecord]:
        """The requests that have ended so far."""

        async def copy() -> list[TimedRecord]:
            return list(self._pool.records)

        return self._call(copy())

    def close(self) -> list[TimedRecord]:
        """Stop the clients, wait for their requests in flight, and return every record."""
        self._call(self._pool.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        return list(self._pool.records)

    def __enter__(self) -> BackgroundLoad:
        return self

    def __exit__(self, *_: object) -> None:
        if not self._loop.is_closed():
            self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
