"""Load a model's tokenizer and render chat prompts into token ids."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from jinja2 import TemplateError
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from prism.errors import InvalidRequest, ModelNotFound


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer stored in the HF folder ``path`` (never from the hub)."""
    try:
        return AutoTokenizer.from_pretrained(Path(path), local_files_only=True)
    except OSError as exc:
        raise ModelNotFound(f"no tokenizer in {path}: {exc}") from exc


def apply_chat_template(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Return the token ids of ``messages`` rendered by the chat template, ready to generate.

    ``tools`` (function definitions) go to a template that renders tools.
    """
    if not tokenizer.chat_template:
        raise InvalidRequest("this model's tokenizer has no chat template", param="messages")
    try:
        encoded = tokenizer.apply_chat_template(
            messages, tools=list(tools or []) or None, add_generation_prompt=True, tokenize=True
        )
    except TemplateError as exc:
        raise InvalidRequest(
            f"chat template rejected the messages: {exc}", param="messages"
        ) from exc
    # transformers 5 returns a BatchEncoding; transformers 4 returned the ids themselves.
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
    return list(cast("list[int]", ids))
