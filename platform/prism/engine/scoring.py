"""Teacher-forced scoring of a token sequence on an engine's model: how likely each token is.

Measures of a model's quality (perplexity, agreement between two precisions) need the
logits at every position of a known text, which serving never computes. :func:`score_tokens`
runs the text as prefill steps on the engine's own model, KV cache and ranks, taking its
blocks from the engine's block pool and returning them after.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prism.engine.kv_cache_manager import blocks_for
from prism.engine.llm_engine import LLMEngine
from prism.engine.step_input import PrefillInput, StepInput


@dataclass(frozen=True, slots=True)
class TokenScores:
    """For each token after the first: its log-probability given the tokens before it
    (``logprobs``), and the token the model ranked first there (``top_ids``)."""

    logprobs: torch.Tensor
    top_ids: torch.Tensor


@torch.inference_mode()
def score_tokens(engine: LLMEngine, token_ids: list[int], chunk_tokens: int) -> TokenScores:
    """Score ``token_ids`` as one sequence, prefilled ``chunk_tokens`` at a time.

    The engine must be idle. The sequence must fit the engine's context and KV cache; its
    blocks go back to the pool, uncached, whatever happens.
    """
    if engine.has_unfinished_requests():
        raise RuntimeError("scoring needs an idle engine")
    if not 2 <= len(token_ids) <= engine.max_model_len:
        raise ValueError(f"score 2 to {engine.max_model_len} tokens, not {len(token_ids)}")
    block_size = engine.config.block_size
    pool = engine.kv.pool
    needed = blocks_for(len(token_ids), block_size)
    if needed > pool.num_free:  # a windowed model's context can exceed the pool
        raise ValueError(
            f"{len(token_ids)} tokens need {needed} KV blocks; {pool.num_free} are free"
        )
    blocks = pool.allocate(needed)
    logprobs, top_ids = [], []
    try:
        for start in range(0, len(token_ids) - 1, chunk_tokens):
            end = min(start + chunk_tokens, len(token_ids) - 1)
            logits = engine.runner.run_step(_prefill(token_ids, start, end, blocks, block_size))
            targets = torch.tensor(token_ids[start + 1 : end + 1], device=logits.device)
            log_softmax = torch.log_softmax(logits, dim=-1)
            logprobs.append(log_softmax.gather(1, targets[:, None])[:, 0].cpu())
            top_ids.append(logits.argmax(dim=-1).cpu())
    finally:
        pool.release(blocks)
    return TokenScores(torch.cat(logprobs), torch.cat(top_ids))


def _prefill(
    token_ids: list[int], start: int, end: int, blocks: list[int], block_size: int
) -> StepInput:
    """Positions ``start``..``end - 1`` as one prefill chunk, every row's logits kept."""
    positions = range(start, end)
    return StepInput(
        token_ids=token_ids[start:end],
        positions=list(positions),
        slots=[blocks[p // block_size] * block_size + p % block_size for p in positions],
        sample_rows=list(range(end - start)),
        prefills=[PrefillInput(0, end - start, end, blocks[: blocks_for(end, block_size)])],
    )
