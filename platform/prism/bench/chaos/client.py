"""One chaos request over the OpenAI chat API, watched chunk by chunk into the ledger."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, cast

import openai
from openai import AsyncOpenAI

from prism.bench.chaos.outcomes import LedgerEntry, Observation, ServerError
from prism.bench.serve.prompts import Messages
from prism.serving.headers import REPLICA_HEADER

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam


class ChaosClient:
    """Streams greedy chat requests (EOS ignored) to ``model`` and records how each ended.

    Times are seconds since ``started`` (a ``time.monotonic`` reading).
    """

    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        max_tokens: int,
        timeout_s: float,
        started: float,
    ) -> None:
        self._client = client
        self._model = model
        self._max_tokens = max_tokens
        self._timeout_s = timeout_s
        self.started = started

    def now(self) -> float:
        """Seconds since ``started``."""
        return time.monotonic() - self.started

    async def send(self, messages: Messages, cancel_after: int | None) -> LedgerEntry:
        """Stream one request; with ``cancel_after``, close it after that many text chunks."""
        seen = Observation(sent_at=self.now())
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._stream(messages, cancel_after, seen)
        except (TimeoutError, openai.APITimeoutError):
            seen.timed_out_after = self._timeout_s
        except openai.APIStatusError as error:
            seen.error = ServerError(error.status_code, error.type, error.message)
        except openai.APIConnectionError as error:
            seen.broken = repr(error.__cause__) if error.__cause__ else error.message
        except openai.APIError as error:  # an SSE error event after the stream started
            seen.error = ServerError(None, error.type, error.message)
        return seen.settle(self.now())

    async def _stream(
        self, messages: Messages, cancel_after: int | None, seen: Observation
    ) -> None:
        async with self._client.chat.completions.with_streaming_response.create(
            model=self._model,
            messages=cast("list[ChatCompletionMessageParam]", messages),
            max_tokens=self._max_tokens,
            temperature=0.0,
            stream=True,
            extra_body={"ignore_eos": True},
        ) as response:
            seen.accepted = True
            seen.replica = response.headers.get(REPLICA_HEADER)
            async for chunk in await response.parse():
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.delta.content:
                    seen.chunk(self.now())
                    if cancel_after is not None and seen.chunks >= cancel_after:
                        seen.cancelled = True
                        return  # leaving the block closes the connection mid-stream
                if choice.finish_reason is not None:
                    seen.finish_reason = choice.finish_reason
