"""OpenAI response bodies and SSE streams for one API call, built from its choices."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent

from prism.outputs import RequestOutput, TokenLogprob
from prism.serving import openai_format as fmt
from prism.serving.errors import to_api_error
from prism.serving.fanout import (
    Choice,
    cancel,
    chunks_in_arrival_order,
    engine_ttft,
    predicted_cached_tokens,
    replicas,
    run_to_end,
)
from prism.serving.headers import (
    ENGINE_TTFT_METRIC,
    PREDICTED_CACHED_HEADER,
    REPLICA_HEADER,
    SERVER_TIMING_HEADER,
    server_timing,
)

logger = logging.getLogger(__name__)


def routing_headers(choices: list[Choice]) -> dict[str, str]:
    """The replicas that serve the call and, under the prefix policy, the predicted cache hit."""
    headers = {REPLICA_HEADER: replicas(choices)}
    predicted = predicted_cached_tokens(choices)
    if predicted is not None:
        headers[PREDICTED_CACHED_HEADER] = str(predicted)
    return headers


def whole_response_headers(choices: list[Choice]) -> dict[str, str]:
    """A non-streamed response's headers: :func:`routing_headers` and the engine's TTFT
    (``server-timing: engine-ttft;dur=<ms>``, the slowest choice's)."""
    headers = routing_headers(choices)
    ttft = engine_ttft(choices)
    if ttft is not None:
        headers[SERVER_TIMING_HEADER] = server_timing(ENGINE_TTFT_METRIC, ttft)
    return headers


Events = AsyncGenerator[ServerSentEvent, None]


class OpenAIStream(EventSourceResponse):
    """An OpenAI stream: ``events``, then ``data: [DONE]``, with keep-alive pings.

    A ``: ping`` comment goes out every ``ping_interval_s`` seconds (0: never) until the
    events run out, so proxies and load balancers keep a stream open while its tokens are
    slow to come; none follows ``[DONE]``. A client that leaves cancels ``events``.
    """

    def __init__(self, events: Events, headers: dict[str, str], ping_interval_s: float) -> None:
        super().__init__(
            self._then_done(events),
            headers=headers,
            ping=ping_interval_s,
            ping_message_factory=fmt.ping_event,
            sep=fmt.SSE_LINE_END,
        )

    async def _then_done(self, events: Events) -> Events:
        async with aclosing(events):
            async for event in events:
                yield event
        self.active = False  # stops the pings: clients read nothing past [DONE]
        yield fmt.done_event()


def streaming_response(
    events: Events, choices: list[Choice], ping_interval_s: float
) -> OpenAIStream:
    """The stream of ``events``, naming the replicas that serve it."""
    headers = {**routing_headers(choices), "cache-control": "no-cache"}
    return OpenAIStream(events, headers, ping_interval_s)


class ResponseBuilder:
    """Builds one API call's response, streamed or whole, from its choices' outputs."""

    def __init__(
        self, prefix: str, model_id: str, tokenizer: Any, include_usage: bool, logprobs: bool
    ) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.model_id = model_id
        self.tokenizer = tokenizer
        self.created = int(time.time())
        self.include_usage = include_usage
        self.logprobs = logprobs

    def _usage(self, choices: list[Choice]) -> dict:
        firsts = {choice.prompt_index: choice for choice in reversed(choices)}
        return fmt.usage(
            sum(choice.prompt_tokens for choice in firsts.values()),
            sum(len(choice.token_ids) for choice in choices),
            sum(choice.cached_tokens for choice in firsts.values()),
        )

    def _envelope(self, kind: str, choices: list[dict], **extra: Any) -> dict:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model_id,
            "choices": choices,
            **extra,
        }

    async def completion_body(self, choices: list[Choice]) -> dict:
        await run_to_end(choices)
        body = [
            {
                "index": choice.index,
                "text": choice.text,
                "logprobs": self._completion_logprobs(choice.logprobs, 0),
                "finish_reason": fmt.finish_reason(choice.finish_reason),
            }
            for choice in choices
        ]
        return self._envelope("text_completion", body, usage=self._usage(choices))

    async def chat_body(self, choices: list[Choice]) -> dict:
        await run_to_end(choices)
        body = [
            {
                "index": choice.index,
                "message": {"role": "assistant", "content": choice.text},
                "logprobs": self._chat_logprobs(choice.logprobs),
                "finish_reason": fmt.finish_reason(choice.finish_reason),
            }
            for choice in choices
        ]
        return self._envelope("chat.completion", body, usage=self._usage(choices))

    def _completion_logprobs(self, items: list[TokenLogprob], offset: int) -> dict | None:
        return fmt.completion_logprobs(self.tokenizer, items, offset) if self.logprobs else None

    def _chat_logprobs(self, items: list[TokenLogprob]) -> dict | None:
        return fmt.chat_logprobs(self.tokenizer, items) if self.logprobs else None

    def _completion_chunk(self, choice: Choice, output: RequestOutput, offset: int) -> dict:
        return {
            "index": choice.index,
            "text": output.new_text,
            "logprobs": self._completion_logprobs(output.logprobs or [], offset),
            "finish_reason": fmt.finish_reason(output.finish_reason),
        }

    def _chat_chunk(self, choice: Choice, output: RequestOutput, offset: int) -> dict:
        return {
            "index": choice.index,
            "delta": {"content": output.new_text} if output.new_text else {},
            "logprobs": self._chat_logprobs(output.logprobs or []),
            "finish_reason": fmt.finish_reason(output.finish_reason),
        }

    def completion_events(self, choices: list[Choice]) -> Events:
        return self._events(choices, "text_completion", self._completion_chunk, role=False)

    def chat_events(self, choices: list[Choice]) -> Events:
        return self._events(choices, "chat.completion.chunk", self._chat_chunk, role=True)

    async def _events(
        self,
        choices: list[Choice],
        kind: str,
        chunk_body: Callable[[Choice, RequestOutput, int], dict],
        role: bool,
    ) -> Events:
        """SSE events: per-choice chunks, then the usage chunk if asked.

        An error after the stream started ends them with an error event (before the
        ``[DONE]`` that :class:`OpenAIStream` adds).
        """
        try:
            if role:
                for choice in choices:
                    opening = {
                        "index": choice.index,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                    yield fmt.chunk_event(self._envelope(kind, [opening]))
            async for choice, chunk in chunks_in_arrival_order(choices):
                offset = len(choice.text)
                choice.absorb(chunk)
                output = chunk.output
                if not (output.new_text or output.finished or output.logprobs):
                    continue
                body = chunk_body(choice, output, offset)
                yield fmt.chunk_event(self._envelope(kind, [body]))
            if self.include_usage:
                yield fmt.chunk_event(self._envelope(kind, [], usage=self._usage(choices)))
        except Exception as error:
            api_error = to_api_error(error)
            logger.error("stream %s failed", self.id, exc_info=error)
            yield fmt.error_event(api_error.body())
        finally:
            cancel(choices)
