"""Constrained decoding: grammars compiled for the model's tokenizer, and token masks.

Each constrained request owns an llguidance matcher. Before sampling, every constrained row
of the step's logits is masked to the tokens its grammar allows (one bitmask per row, filled
by the matcher, turned into 0 / ``-inf`` penalties by a byte table and added to the rows
together); after sampling, the engine advances each matcher by the committed token.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import llguidance
import llguidance.hf
import torch

from prism.errors import InvalidRequest
from prism.structured_output import StructuredOutput

GRAMMAR_CACHE_SIZE = 256
"""Compiled grammars an engine keeps, least recently used dropped first."""

_BITS = 32
_BYTE_PENALTY = torch.tensor(
    [[0.0 if (byte >> bit) & 1 else float("-inf") for bit in range(8)] for byte in range(256)]
)
"""Row ``b``: for each bit of byte ``b``, lowest first (a bitmask's token order), what to add
to that token's logit: 0 if the bit allows it, ``-inf`` if not. A table lookup and an add
measured ten times faster than unpacking the bits and ``masked_fill`` on a CPU."""


class GrammarCompiler:
    """Compiles constraints for one tokenizer, caching compiled grammars by constraint.

    Thread-safe: the async engine compiles on worker threads, off the step loop. A request
    gets a copy of the cached matcher, so compiling a schema is paid once.
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        eos_token_ids: Iterable[int],
        cache_size: int = GRAMMAR_CACHE_SIZE,
    ) -> None:
        self._hf_tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos_token_ids = sorted(eos_token_ids)
        self._cache_size = cache_size
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._compiled: OrderedDict[StructuredOutput, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def _llg_tokenizer(self) -> llguidance.LLTokenizer:
        """The tokenizer as llguidance sees it, built on first use (about 0.5 s)."""
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.hf.from_tokenizer(
                    self._hf_tokenizer, n_vocab=self._vocab_size, eos_token=self._eos_token_ids
                )
            return self._tokenizer

    def matcher(self, constraint: StructuredOutput) -> llguidance.LLMatcher:
        """A fresh matcher for ``constraint``; :class:`InvalidRequest` if it cannot compile."""
        with self._lock:
            compiled = self._compiled.get(constraint)
            if compiled is not None:
                self._compiled.move_to_end(constraint)
                return compiled.deep_copy()
        compiled = llguidance.LLMatcher(
            self._llg_tokenizer(), constraint.llguidance_grammar(), log_level=0
        )
        if compiled.is_error():
            raise InvalidRequest(
                f"{constraint.describe()} cannot be enforced: {compiled.get_error()}",
                "structured_outputs",
            )
        with self._lock:
            self._compiled[constraint] = compiled
            while len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        return compiled.deep_copy()


def mask_disallowed(logits: torch.Tensor, rows: list[int], matchers: list[Any]) -> None:
    """Set to ``-inf`` the logits of tokens each matcher forbids (``logits`` [rows, vocab],
    changed in place; ``matchers[i]`` constrains row ``rows[i]``; the rows hold no ``+inf``)."""
    vocab = logits.shape[-1]
    words = (vocab + _BITS - 1) // _BITS
    bitmask = torch.empty((len(rows), words), dtype=torch.int32)
    for index, matcher in enumerate(matchers):  # llguidance's thread pool measured slower
        matcher.unsafe_compute_mask_ptr(bitmask[index].data_ptr(), words * 4)
    # Little-endian words: byte k of word w holds tokens 32w + 8k ... 32w + 8k + 7.
    penalty = _BYTE_PENALTY.index_select(0, bitmask.view(torch.uint8).view(-1).long())
    penalty = penalty.view(len(rows), -1)[:, :vocab].to(logits.device, logits.dtype)
    if len(rows) == logits.shape[0]:
        logits.add_(penalty)
    else:
        logits.index_add_(0, torch.tensor(rows, device=logits.device), penalty)
