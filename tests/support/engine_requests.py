"""Engine requests built directly, for scheduler and KV cache tests that run no model."""

from __future__ import annotations

import torch

from prism.engine.kv_cache_manager import KVCacheManager
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


def commit(kv: KVCacheManager, request: Request, num_tokens: int) -> None:
    """Mark ``num_tokens`` more tokens computed as the scheduler commits a step: registered,
    and the blocks behind a window released."""
    request.num_computed_tokens += num_tokens
    kv.register_computed(request)
    kv.release_outside_window(request)


def compute(kv: KVCacheManager, request: Request, num_tokens: int) -> None:
    """Give the request blocks for ``num_tokens`` more tokens and commit them."""
    assert kv.allocate(request, num_tokens)
    commit(kv, request, num_tokens)


def cached_request(kv: KVCacheManager, prompt: list[int]) -> Request:
    """A finished request whose complete blocks stay in the prefix cache."""
    request = engine_request("done", prompt)
    compute(kv, request, len(prompt))
    kv.free(request)
    return request
