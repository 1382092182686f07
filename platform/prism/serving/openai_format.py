"""OpenAI response bodies, stream chunks and the stream's SSE events, built from engine outputs."""

from __future__ import annotations

import json
from typing import Any

from sse_starlette import ServerSentEvent

from prism.outputs import FinishReason, TokenLogprob

Body = dict[str, Any]

SSE_LINE_END = "\n"
"""Lines of a stream end in LF alone, as OpenAI's own streams do."""

DONE = "[DONE]"
"""The data of a stream's last event: OpenAI clients stop reading there."""


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> Body:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def finish_reason(reason: FinishReason | None) -> str | None:
    """OpenAI names: an abort is reported like a stop (the client asked for it)."""
    if reason is None:
        return None
    return "length" if reason is FinishReason.LENGTH else "stop"


def _token_text(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id])


def _chat_token(tokenizer: Any, token_id: int, logprob: float) -> Body:
    text = _token_text(tokenizer, token_id)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_logprobs(tokenizer: Any, logprobs: list[TokenLogprob]) -> Body:
    """The ``logprobs`` object of a chat choice (or chunk)."""
    return {
        "content": [
            {
                **_chat_token(tokenizer, item.token_id, item.logprob),
                "top_logprobs": [_chat_token(tokenizer, t, lp) for t, lp in item.top],
            }
            for item in logprobs
        ]
    }


def completion_logprobs(tokenizer: Any, logprobs: list[TokenLogprob], text_offset: int) -> Body:
    """The legacy completions ``logprobs`` object, offsets counted from ``text_offset``."""
    tokens, offsets = [], []
    for item in logprobs:
        text = _token_text(tokenizer, item.token_id)
        tokens.append(text)
        offsets.append(text_offset)
        text_offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [item.logprob for item in logprobs],
        "top_logprobs": [
            {_token_text(tokenizer, t): lp for t, lp in item.top} for item in logprobs
        ],
        "text_offset": offsets,
    }


def _json(payload: Body) -> str:
    """Compact JSON, non-ASCII escaped: no character an SSE parser could take for a line end."""
    return json.dumps(payload, separators=(",", ":"))


def chunk_event(chunk: Body) -> ServerSentEvent:
    """A stream chunk (or the closing usage chunk) as a ``data:`` event."""
    return ServerSentEvent(_json(chunk), sep=SSE_LINE_END)


def error_event(error: Body) -> ServerSentEvent:
    """An error after the stream started: an ``error`` event carrying OpenAI's error JSON."""
    return ServerSentEvent(_json(error), event="error", sep=SSE_LINE_END)


def done_event() -> ServerSentEvent:
    """``data: [DONE]``, the end of every stream."""
    return ServerSentEvent(DONE, sep=SSE_LINE_END)


def ping_event() -> ServerSentEvent:
    """The keep-alive ``: ping``: a comment, which SSE clients skip."""
    return ServerSentEvent(comment="ping", sep=SSE_LINE_END)
