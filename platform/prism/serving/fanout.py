"""Running the engine requests behind one API call (several prompts, ``n`` choices each)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from prism.outputs import FinishReason, TokenLogprob
from prism.routing.hint import RoutingHint
from prism.sampling_params import SamplingParams
from prism.serving.errors import as_prism_error
from prism.serving.messages import GenerateChunk, GenerateRequest


class ChunkStream(Protocol):
    """One engine request's outputs as they arrive, and a way to stop it early.

    Serve's streaming handle call (``handle.generate.options(stream=True).remote(...)``)
    is one; anything that iterates over :class:`GenerateChunk` and can be cancelled is too.
    """

    def __aiter__(self) -> AsyncIterator[GenerateChunk]: ...

    async def __anext__(self) -> GenerateChunk: ...

    def cancel(self) -> None:
        """Abort the request: the engine stops it and frees its blocks."""
        ...


Send = Callable[[GenerateRequest], ChunkStream]
"""Starts one engine request somewhere (a model replica) and returns its stream."""


@dataclass(slots=True)
class Choice:
    """One engine request answering one choice of the API call, and what it produced."""

    index: int
    prompt_index: int
    stream: ChunkStream
    first: GenerateChunk | None = None
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    routing: RoutingHint | None = None
    first_token_seconds: float | None = None
    """The replica's time from the request's arrival to its first token."""

    def absorb(self, chunk: GenerateChunk) -> None:
        output = chunk.output
        if chunk.first_token_seconds is not None:
            self.first_token_seconds = chunk.first_token_seconds
        self.text += output.new_text
        self.token_ids.extend(output.new_token_ids)
        self.logprobs.extend(output.logprobs or [])
        self.prompt_tokens = output.num_prompt_tokens
        self.cached_tokens = output.num_cached_tokens
        if output.finished:
            self.finish_reason = output.finish_reason


def _choice_params(params: SamplingParams, choice: int) -> SamplingParams:
    """Choices of a seeded request get distinct, reproducible seeds."""
    return (
        params if params.seed is None or choice == 0 else replace(params, seed=params.seed + choice)
    )


async def start_choices(
    send: Send,
    prompts: list[list[int]],
    params: SamplingParams,
    n: int,
    cache_salt: str | None,
    routing: Callable[[list[int]], RoutingHint],
) -> list[Choice]:
    """Send every choice to the model and wait for each one's first output.

    ``send`` starts one engine request and returns its stream; ``routing`` makes the
    router's hint for a prompt (its block hashes, a session id). Every engine request gets
    a new id: a client's ``x-request-id`` names its call in logs, and two calls may share one.

    Errors the engine raises before producing anything (a too-long prompt, overload)
    surface here, before a response has started; the other choices are then cancelled.
    """
    choices: list[Choice] = []
    try:
        for prompt_index, prompt in enumerate(prompts):
            hint = routing(prompt)
            for offset in range(n):
                index = prompt_index * n + offset
                engine_request = GenerateRequest(
                    request_id=uuid.uuid4().hex,
                    prompt_token_ids=prompt,
                    params=_choice_params(params, offset),
                    cache_salt=cache_salt,
                    routing=replace(hint),
                )
                stream = send(engine_request)
                choices.append(Choice(index, prompt_index, stream, routing=engine_request.routing))
        firsts = await asyncio.gather(*(anext(choice.stream) for choice in choices))
    except Exception as error:
        cancel(choices)
        raise as_prism_error(error) from error
    except BaseException:
        cancel(choices)
        raise
    for choice, first in zip(choices, firsts, strict=True):
        choice.first = first
    return choices


async def chunks_in_arrival_order(
    choices: list[Choice],
) -> AsyncIterator[tuple[Choice, GenerateChunk]]:
    """Every chunk of every choice (the first ones included), as soon as each arrives."""
    queue: asyncio.Queue[tuple[Choice, GenerateChunk] | BaseException | None] = asyncio.Queue()

    async def pump(choice: Choice) -> None:
        try:
            if choice.first is not None:  # set by start_choices
                await queue.put((choice, choice.first))
            async for chunk in choice.stream:
                await queue.put((choice, chunk))
            await queue.put(None)
        except Exception as error:
            await queue.put(as_prism_error(error))
        except BaseException as error:  # cancelled: wake the consumer, then stop
            queue.put_nowait(error)
            raise

    tasks = [asyncio.create_task(pump(choice)) for choice in choices]
    try:
        remaining = len(choices)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()


async def run_to_end(choices: list[Choice]) -> None:
    """Absorb every choice's outputs until all have finished (or cancel what is left)."""
    try:
        async for choice, chunk in chunks_in_arrival_order(choices):
            choice.absorb(chunk)
    finally:
        cancel(choices)


def cancel(choices: list[Choice]) -> None:
    """Cancel choices still running (their engine requests are aborted, blocks freed)."""
    for choice in choices:
        if choice.finish_reason is None:
            choice.stream.cancel()


def replicas(choices: list[Choice]) -> str:
    """The replicas that served the choices, for the ``x-prism-replica`` header."""
    seen = dict.fromkeys(choice.first.replica for choice in choices if choice.first is not None)
    return ",".join(seen)


def engine_ttft(choices: list[Choice]) -> float | None:
    """The slowest choice's time to first token at its replica (None: no choice had one)."""
    times = [choice.first_token_seconds for choice in choices]
    return max((seconds for seconds in times if seconds is not None), default=None)


def predicted_cached_tokens(choices: list[Choice]) -> int | None:
    """Cached prompt tokens the router predicted (None: it made no guess).

    Counted once per prompt, like the ``cached_tokens`` of the usage.
    """
    firsts = {choice.prompt_index: choice for choice in reversed(choices)}
    predictions = [
        choice.routing.predicted_cached_tokens
        for choice in firsts.values()
        if choice.routing is not None and choice.routing.predicted_cached_tokens is not None
    ]
    return sum(predictions) if predictions else None
