"""An asyncio front for :class:`LLMEngine`: a background step loop and streamed outputs.

Only the loop thread changes the engine: it steps, adds and aborts requests. Callers hand it
requests and aborts through a queue and get outputs back on their own event loop, so a request
may be added from any loop or thread. From the callers' threads the engine is only read:
``validate`` (limits fixed at start) and ``check_health`` (whether a rank has died); stats
and KV events are copied out by the loop thread. ``inject_step_fault`` only arms a flag.

A step that fails with :class:`StepFailed` ends only its own requests, with that error; the
loop serves on unless ``MAX_CONSECUTIVE_FAILED_STEPS`` fail in a row. Any other failure, or a
step outlasting ``step_timeout_s`` (watched from another thread), makes the engine dead: every
request in flight ends with :class:`EngineDead` and :meth:`AsyncEngine.check_health` raises.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from prism.engine.llm_engine import LLMEngine
from prism.engine.step_watchdog import StepWatchdog
from prism.engine_stats import EngineStats
from prism.errors import EngineDead, InvalidRequest, Overloaded, StepFailed
from prism.hashing import BlockHash
from prism.kv_events import KVEvent, KVEventsDropped
from prism.outputs import RequestOutput
from prism.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILED_STEPS = 5
"""Failed steps in a row after which the engine counts as dead rather than its requests as
unlucky."""

MAX_PENDING_EVENTS = 65536
"""KV events kept for :meth:`AsyncEngine.drain_events`; past this they are replaced by one
:class:`KVEventsDropped`, so an engine nobody drains holds bounded memory."""


@dataclass(slots=True)
class _Add:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    cache_salt: str | None
    matcher: Any | None


@dataclass(slots=True)
class _Abort:
    request_id: str


@dataclass(slots=True)
class _Snapshot:
    """Read the cached block hashes on the engine thread, dropping the events before them."""

    loop: asyncio.AbstractEventLoop
    result: asyncio.Future[list[BlockHash]]

    def resolve(self, hashes: list[BlockHash]) -> None:
        self.loop.call_soon_threadsafe(_resolve, self.result, hashes)


def _resolve(result: asyncio.Future[list[BlockHash]], hashes: list[BlockHash]) -> None:
    if not result.done():
        result.set_result(hashes)


@dataclass(slots=True)
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RequestOutput | BaseException]

    def put(self, item: RequestOutput | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            logger.debug("dropped an output: its event loop is closed")


class AsyncEngine:
    """Runs an :class:`LLMEngine` in a background thread and streams its outputs.

    With ``max_queued_requests`` set, a request that would make more than that many wait
    behind a full batch (``max_num_seqs`` running) is refused with :class:`Overloaded`.
    """

    def __init__(self, engine: LLMEngine, max_queued_requests: int | None = None) -> None:
        self.engine = engine
        self.max_in_flight = (
            None
            if max_queued_requests is None
            else engine.config.max_num_seqs + max_queued_requests
        )
        self._inbox: queue.SimpleQueue[_Add | _Abort | _Snapshot | None] = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._events: deque[KVEvent] = deque()
        self._stats = engine.stats()
        self._error: BaseException | None = None
        self._stopping = False
        self._failed_steps = 0
        self._watchdog = StepWatchdog(engine.config.step_timeout_s, self._stalled)
        self._thread = threading.Thread(target=self._run, name="prism-engine", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return self._thread.is_alive() and self._error is None

    def check_health(self) -> None:
        """Raise :class:`EngineDead` if the step loop has stopped or a rank has died."""
        if not self.healthy:
            raise EngineDead(f"the engine loop stopped: {self._error!r}")
        self.engine.check_health()

    async def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
        cache_salt: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Stream a request's outputs; leaving the iteration early aborts the request.

        Invalid requests raise :class:`~prism.errors.InvalidRequest` before any work. A
        constrained request's grammar is compiled on a worker thread, off the step loop.
        """
        self.check_health()
        self.engine.validate(prompt_token_ids, params)
        matcher = None
        if params.structured is not None:
            matcher = await asyncio.to_thread(self.engine.compile_constraint, params)
        request_id = request_id or uuid.uuid4().hex
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        with self._streams_lock:
            if request_id in self._streams:
                raise InvalidRequest(f"request id {request_id!r} is already in use", "request_id")
            if self.max_in_flight is not None and len(self._streams) >= self.max_in_flight:
                raise Overloaded(f"{len(self._streams)} requests in flight; retry later")
            self._streams[request_id] = stream
        if not self.healthy:
            with self._streams_lock:
                self._streams.pop(request_id, None)
            self.check_health()
        self._inbox.put(_Add(request_id, list(prompt_token_ids), params, cache_salt, matcher))
        finished = False
        try:
            while not finished:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        """Stop a request (if it is still running) and free its blocks."""
        self._inbox.put(_Abort(request_id))

    def inject_step_fault(self) -> None:
        """Make the next step that has work fail like a real fault (``fault_injection`` only)."""
        self.engine.inject_step_fault()

    def stats(self) -> EngineStats:
        """The stats as of the end of the latest step."""
        return self._stats

    def drain_events(self) -> list[KVEvent]:
        """KV events since the last drain, oldest first."""
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    async def cached_block_hashes(self) -> list[BlockHash]:
        """Every block hash cached now; later :meth:`drain_events` calls continue from it.

        Events not yet drained are dropped: the returned set already includes their effect.
        """
        self.check_health()
        snapshot = _Snapshot(asyncio.get_running_loop(), asyncio.get_running_loop().create_future())
        self._inbox.put(snapshot)
        return await snapshot.result

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the loop; requests still in flight end with :class:`EngineDead`.

        Returns after ``timeout`` seconds even if the loop is stuck in a step.
        """
        self._stopping = True
        self._inbox.put(None)
        self._thread.join(timeout)
        self._watchdog.stop()
        if self._thread.is_alive():
            self._die(EngineDead(f"the engine loop did not stop within {timeout} s"))

    def _run(self) -> None:
        try:
            while not self._stopping and self._error is None:
                self._take_commands(block=not self.engine.has_unfinished_requests())
                if self._stopping:
                    break
                self._deliver(self._step())
        except BaseException as error:
            logger.exception("engine loop failed")
            self._error = self._error or error
        self._watchdog.stop()
        self._fail_all(self._error or EngineDead("the engine was shut down"))
        try:
            self.engine.close()
        except Exception:
            logger.warning("the engine did not close cleanly", exc_info=True)

    def _step(self) -> list[RequestOutput]:
        """One engine step (if there is work); a :class:`StepFailed` ends only its requests."""
        outputs: list[RequestOutput] = []
        if self.engine.has_unfinished_requests():
            try:
                with self._watchdog.step():
                    outputs = self.engine.step()
                self._failed_steps = 0
            except StepFailed as failure:
                self._failed_steps += 1
                if self._failed_steps >= MAX_CONSECUTIVE_FAILED_STEPS:
                    raise EngineDead(
                        f"{self._failed_steps} engine steps failed in a row"
                    ) from failure
                for request_id in failure.request_ids:
                    self._send(request_id, StepFailed(str(failure), (request_id,)), last=True)
        self._publish()
        return outputs

    def _stalled(self, seconds: float) -> None:
        """The watchdog's verdict on a step that will not end (called from its thread)."""
        self._die(
            EngineDead(
                f"an engine step has run for {seconds:.1f} s, past step_timeout_s "
                f"({self._watchdog.timeout_s} s): a tensor-parallel rank or the device hangs"
            )
        )

    def _die(self, error: EngineDead) -> None:
        """Declare the engine dead from outside the loop thread, ending every stream now."""
        logger.error("%s", error)
        if self._error is None:
            self._error = error
        self._fail_all(error)

    def _take_commands(self, block: bool) -> None:
        try:
            command = self._inbox.get(block=block)
        except queue.Empty:
            return
        while True:
            self._apply(command)
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _apply(self, command: _Add | _Abort | _Snapshot | None) -> None:
        if command is None:
            self._stopping = True
        elif isinstance(command, _Snapshot):
            self.engine.drain_events()
            self._events.clear()
            command.resolve(self.engine.cached_block_hashes())
        elif isinstance(command, _Abort):
            output = self.engine.abort_request(command.request_id)
            if output is not None:
                self._deliver([output])
        else:
            try:
                self.engine.add_request(
                    command.request_id,
                    command.prompt_token_ids,
                    command.params,
                    command.cache_salt,
                    command.matcher,
                )
            except Exception as error:
                self._send(command.request_id, error, last=True)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for output in outputs:
            self._send(output.request_id, output, last=output.finished)

    def _send(self, request_id: str, item: RequestOutput | BaseException, last: bool) -> None:
        with self._streams_lock:
            stream = self._streams.pop(request_id) if last else self._streams.get(request_id)
        if stream is not None:
            stream.put(item)

    def _publish(self) -> None:
        self._events.extend(self.engine.drain_events())
        if len(self._events) > MAX_PENDING_EVENTS:
            self._events.clear()
            self._events.append(KVEventsDropped())
        self._stats = self.engine.stats()

    def _fail_all(self, error: BaseException) -> None:
        with self._streams_lock:
            streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream.put(error if isinstance(error, EngineDead) else EngineDead(repr(error)))
