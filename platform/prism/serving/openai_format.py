"""OpenAI response bodies and stream chunks, built from engine outputs."""

from __future__ import annotations

import json
from typing import Any

from prism.outputs import FinishReason, TokenLogprob

Body = dict[str, Any]


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


def sse(payload: Body | str) -> str:
    """One server-sent event carrying ``payload`` (JSON, or the literal ``[DONE]``)."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"
