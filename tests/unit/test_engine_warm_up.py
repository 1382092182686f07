"""The engine's warm-up: one synthetic request that leaves nothing behind."""

from __future__ import annotations

import pytest

from prism.engine import LLMEngine, SamplingParams
from support.engines import engine_config, generate_alone
from support.models import ReferenceModel, random_prompts

GREEDY = SamplingParams(max_tokens=8, temperature=0.0)
SAMPLED = SamplingParams(max_tokens=8, temperature=1.0)


def make_engine(model: ReferenceModel) -> LLMEngine:
    return LLMEngine(model.model_id, model.path, engine_config(block_size=4, num_kv_blocks=128))


def test_warm_up_leaves_no_blocks_cache_events_or_requests(tiny_llama: ReferenceModel) -> None:
    engine = make_engine(tiny_llama)

    engine.warm_up()

    stats = engine.stats()
    assert stats.num_free_kv_blocks == stats.num_kv_blocks == 128
    assert (stats.num_running, stats.num_waiting) == (0, 0)
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (0, 0)
    assert engine.cached_block_hashes() == []
    assert engine.drain_events() == []
    assert not engine.has_unfinished_requests()


def test_requests_after_warm_up_give_the_same_tokens(tiny_llama: ReferenceModel) -> None:
    """Greedy output is unchanged, and unseeded requests draw the same seeds as without it."""
    prompt = random_prompts([21])[0]
    cold = make_engine(tiny_llama)
    greedy = generate_alone(cold, "g", prompt, GREEDY)
    expected = [greedy, generate_alone(cold, "s", prompt, SAMPLED)]

    warm = make_engine(tiny_llama)
    warm.warm_up()

    greedy = generate_alone(warm, "g", prompt, GREEDY)
    assert [greedy, generate_alone(warm, "s", prompt, SAMPLED)] == expected


def test_warm_up_refuses_an_engine_with_requests(tiny_llama: ReferenceModel) -> None:
    engine = make_engine(tiny_llama)
    engine.add_request("busy", random_prompts([9])[0], GREEDY)

    with pytest.raises(RuntimeError, match="idle"):
        engine.warm_up()
