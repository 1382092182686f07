"""The state of one request as it moves through the engine."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torch

from prism.engine.detokenizer import OutputText
from prism.hashing import BlockHash, extend_block_hashes
from prism.outputs import FinishReason, TokenLogprob
from prism.sampling_params import SamplingParams

RELEASED_BLOCK = -1
"""A block table entry whose block went back to the pool: outside every later token's window."""


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Request:
    """One generation request: its tokens, its KV blocks and its progress.

    ``num_computed_tokens`` counts the leading tokens whose K/V sit in the cache;
    ``block_hashes`` holds the hash of every full block of ``token_ids`` so far.
    ``block_ids`` is the block table, one entry per block of tokens from the first; its
    first ``num_released_blocks`` entries are :data:`RELEASED_BLOCK` (a model whose every
    layer slides one window gives back the blocks its next tokens no longer see).
    ``matcher`` (an llguidance matcher) holds the state of a constrained request's grammar.
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    max_tokens: int
    eos_token_ids: frozenset[int]
    hash_root: BlockHash
    block_size: int
    arrival_time: float
    generator: torch.Generator
    text: OutputText | None = None
    matcher: Any | None = None
    token_ids: list[int] = field(init=False)
    output_token_ids: list[int] = field(default_factory=list)
    output_logprobs: list[TokenLogprob] = field(default_factory=list)
    num_computed_tokens: int = 0
    block_ids: list[int] = field(default_factory=list)
    block_hashes: list[BlockHash] = field(default_factory=list)
    num_registered_blocks: int = 0
    num_released_blocks: int = 0
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None
    num_cached_tokens: int | None = None
    num_preemptions: int = 0
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None

    def __post_init__(self) -> None:
        self.token_ids = list(self.prompt_token_ids)
        extend_block_hashes(self.block_hashes, self.token_ids, self.block_size, self.hash_root)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def held_block_ids(self) -> list[int]:
        """The blocks the request holds: its block table past the released entries."""
        return self.block_ids[self.num_released_blocks :]

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        """Record a sampled token and hash the block it completes, if any."""
        self.token_ids.append(token_id)
        self.output_token_ids.append(token_id)
        if len(self.token_ids) % self.block_size == 0:
            extend_block_hashes(self.block_hashes, self.token_ids, self.block_size, self.hash_root)
