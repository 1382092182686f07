"""Incremental detokenization and stop-string handling for one request's output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Prompt tokens decoded along with the output so word boundaries (leading spaces) come out
# the same as when the whole sequence is decoded at once.
_CONTEXT_TOKENS = 6
_INCOMPLETE_CHAR = "\ufffd"


class OutputText:
    """Turns sampled tokens into text deltas and watches for stop strings.

    While stop strings are set, the last ``len(longest stop) - 1`` characters are held back
    so a client never sees the beginning of a stop string that is later cut off.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: Sequence[int],
        stop: Sequence[str] = (),
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._ids = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._stop = tuple(stop)
        self._holdback = max((len(s) for s in self._stop), default=1) - 1
        self.text = ""
        self._emitted = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special)

    def _decode_next(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) <= len(prefix) or full.endswith(_INCOMPLETE_CHAR):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return full[len(prefix) :]

    def push(self, token_id: int, check_stop: bool = True) -> str | None:
        """Add a token; return the stop string it completed (the text is cut before it)."""
        delta = self._decode_next(token_id)
        if not delta:
            return None
        search_from = max(0, len(self.text) - self._holdback)
        self.text += delta
        if not check_stop:
            return None
        # The earliest match in the text wins, whatever the order of the list.
        matches = [
            (index, stop)
            for stop in self._stop
            if (index := self.text.find(stop, search_from)) != -1
        ]
        if not matches:
            return None
        index, stop = min(matches)
        self.text = self.text[:index]
        return stop

    def take_delta(self, finished: bool) -> str:
        """The text not yet handed out, minus the held-back tail unless ``finished``."""
        end = len(self.text) if finished else max(self._emitted, len(self.text) - self._holdback)
        delta = self.text[self._emitted : end]
        self._emitted = end
        return delta
