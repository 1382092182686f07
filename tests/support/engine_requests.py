"""Engine requests built directly, for scheduler and KV cache tests that run no model."""

from __future__ import annotations

import torch

from prism.engine.request import Request
from prism.hashing import cache_namespace, root_hash
from prism.sampling_params import SamplingParams

BLOCK_SIZE = 4


def engine_request(request_id: str, prompt: list[int], block_size: int = BLOCK_SIZE) -> Request:
    """A request as the engine queues it (greedy, 64 tokens at most), not yet scheduled."""
    params = SamplingParams(max_tokens=64, temperature=0.0)
    return Request(
        request_id=request_id,
        prompt_token_ids=prompt,
        params=params,
        max_tokens=64,
        eos_token_ids=frozenset(),
        hash_root=root_hash(cache_namespace("test-model")),
        block_size=block_size,
        arrival_time=0.0,
        generator=torch.Generator(),
    )
