"""OpenAI response bodies and SSE streams for one API call, built from its choices."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent

from prism.outputs import FinishReason, RequestOutput, TokenLogprob
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
from prism.serving.tool_calls import ToolCalling, ToolCallParser, whole_output

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


def _finish_reason(reason: FinishReason | None, calls: int) -> str | None:
    """OpenAI's finish reason; ``tool_calls`` when a reply that made calls stopped."""
    name = fmt.finish_reason(reason)
    return "tool_calls" if calls and name == "stop" else name


class ResponseBuilder:
    """Builds one API call's response, streamed or whole, from its choices' outputs.

    With ``tools``, chat replies are parsed for tool calls (:mod:`prism.serving.tool_calls`).
    """

    def __init__(
        self,
        prefix: str,
        model_id: str,
        tokenizer: Any,
        include_usage: bool,
        logprobs: bool,
        tools: ToolCalling | None = None,
    ) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.model_id = model_id
        self.tokenizer = tokenizer
        self.created = int(time.time())
        self.include_usage = include_usage
        self.logprobs = logprobs
        self.tools = tools
        self._parsers: dict[int, ToolCallParser] = {}

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
        body = []
        for choice in choices:
            message: dict[str, Any] = {"role": "assistant", "content": choice.text}
            calls: list[dict] = []
            if self.tools is not None:
                content, calls = whole_output(self.tools.parser(), choice.text)
                message = {"role": "assistant", "content": content}
                if calls:
                    message["tool_calls"] = calls
            body.append(
                {
                    "index": choice.index,
                    "message": message,
                    "logprobs": self._chat_logprobs(choice.logprobs),
                    "finish_reason": _finish_reason(choice.finish_reason, len(calls)),
                }
            )
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

    def _chat_chunk(self, choice: Choice, output: RequestOutput, offset: int) -> dict | None:
        delta: dict[str, Any] = {"content": output.new_text} if output.new_text else {}
        calls = 0
        if self.tools is not None:
            parser = self._parsers.setdefault(choice.index, self.tools.parser())
            delta = self._tool_delta(parser, output)
            calls = parser.num_calls
        if not (delta or output.finished or output.logprobs):
            return None
        return {
            "index": choice.index,
            "delta": delta,
            "logprobs": self._chat_logprobs(output.logprobs or []),
            "finish_reason": _finish_reason(output.finish_reason, calls),
        }

    @staticmethod
    def _tool_delta(parser: ToolCallParser, output: RequestOutput) -> dict[str, Any]:
        """A chunk's delta from the parser: content (whitespace between calls left out) and
        tool-call pieces."""
        parsed = parser.feed(output.new_text)
        if output.finished:
            rest = parser.finish()
            parsed.content += rest.content
            parsed.calls += rest.calls
        delta: dict[str, Any] = {}
        if parsed.content and (parsed.content.strip() or not parser.num_calls):
            delta["content"] = parsed.content
        if parsed.calls:
            delta["tool_calls"] = [call.body() for call in parsed.calls]
        return delta

    def completion_events(self, choices: list[Choice]) -> Events:
        return self._events(choices, "text_completion", self._completion_chunk, role=False)

    def chat_events(self, choices: list[Choice]) -> Events:
        return self._events(choices, "chat.completion.chunk", self._chat_chunk, role=True)

    async def _events(
        self,
        choices: list[Choice],
        kind: str,
        chunk_body: Callable[[Choice, RequestOutput, int], dict | None],
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
                if body is not None:
                    yield fmt.chunk_event(self._envelope(kind, [body]))
            if self.include_usage:
                yield fmt.chunk_event(self._envelope(kind, [], usage=self._usage(choices)))
        except Exception as error:
            api_error = to_api_error(error)
            logger.error("stream %s failed", self.id, exc_info=error)
            yield fmt.error_event(api_error.body())
        finally:
            cancel(choices)
