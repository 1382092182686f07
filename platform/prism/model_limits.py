"""The checks of a request against a model's limits, made by the ingress and the engine alike:
its vocabulary and its context."""

from __future__ import annotations

from collections.abc import Sequence

from prism.errors import ContextTooLong, InvalidRequest


def check_token_ids(token_ids: Sequence[int], vocab_size: int) -> None:
    """Raise :class:`InvalidRequest` unless every id is in ``[0, vocab_size)``."""
    if any(not 0 <= token < vocab_size for token in token_ids):
        raise InvalidRequest("the prompt holds token ids outside the vocabulary", "prompt")


def check_context(num_prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> None:
    """Raise :class:`ContextTooLong` unless the prompt plus ``max_tokens`` (at least one
    output token) fits in ``max_model_len`` tokens."""
    if num_prompt_tokens >= max_model_len:
        raise ContextTooLong(
            f"the prompt has {num_prompt_tokens} tokens; this model's context is "
            f"{max_model_len} tokens, including at least one output token",
            "prompt",
        )
    if num_prompt_tokens + (max_tokens or 1) > max_model_len:
        raise ContextTooLong(
            f"the prompt ({num_prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds "
            f"this model's context of {max_model_len}",
            "max_tokens",
        )
