"""Automatic prefix caching: shared prefixes reuse blocks and keep outputs identical."""

from __future__ import annotations

from prism.engine import LLMEngine, SamplingParams
from prism.hashing import block_hashes, cache_namespace
from prism.kv_events import BlocksRemoved, BlocksStored
from support.engines import engine_config, generate_alone
from support.models import ReferenceModel, random_prompts

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def generate(
    engine: LLMEngine, request_id: str, prompt: list[int], params: SamplingParams = GREEDY
) -> list[int]:
    return generate_alone(engine, request_id, prompt, params)


def make_engine(model: ReferenceModel, **overrides) -> LLMEngine:
    config = engine_config(block_size=4, num_kv_blocks=128, **overrides)
    return LLMEngine(model.model_id, model.path, config)


def test_shared_prefix_reuses_blocks_and_keeps_output(tiny_llama: ReferenceModel) -> None:
    system, question_a, question_b = random_prompts([22, 5, 7])
    cold = make_engine(tiny_llama, enable_prefix_caching=False)
    expected = generate(cold, "b", system + question_b)

    engine = make_engine(tiny_llama)
    generate(engine, "a", system + question_a)
    before = engine.stats()
    output = generate(engine, "b", system + question_b)
    after = engine.stats()

    assert output == expected
    assert after.prefix_cache_hits - before.prefix_cache_hits == 20  # 5 full blocks of 4
    assert after.prefix_cache_queries - before.prefix_cache_queries == 29


def test_identical_prompt_recomputes_only_its_last_token(tiny_llama: ReferenceModel) -> None:
    prompt = random_prompts([16])[0]
    engine = make_engine(tiny_llama)
    first = generate(engine, "first", prompt)
    engine.add_request("again", prompt, GREEDY)
    outputs = []
    while engine.has_unfinished_requests():
        outputs.extend(engine.step())

    assert [t for o in outputs for t in o.new_token_ids] == first
    assert outputs[-1].num_cached_tokens == 12  # 16 tokens: the last block is recomputed


def test_engine_hashes_equal_prism_hashing(tiny_llama: ReferenceModel) -> None:
    prompt = random_prompts([37])[0]
    engine = make_engine(tiny_llama)
    request = engine.add_request("r", prompt, SamplingParams(max_tokens=1, temperature=0.0))
    while engine.has_unfinished_requests():
        engine.step()

    expected = block_hashes(prompt, 4, cache_namespace(tiny_llama.model_id))
    assert request.block_hashes == expected
    stored = [
        h for e in engine.drain_events() if isinstance(e, BlocksStored) for h in e.block_hashes
    ]
    assert stored == expected


def test_cache_salt_isolates_prefixes(tiny_llama: ReferenceModel) -> None:
    prompt = random_prompts([20])[0]
    engine = make_engine(tiny_llama)
    generate(engine, "plain", prompt)
    engine.add_request("salted", prompt, GREEDY, cache_salt="tenant-b")
    while engine.has_unfinished_requests():
        outputs = engine.step()
    assert outputs[-1].num_cached_tokens == 0


def test_eviction_reports_removed_blocks_and_drops_hits(tiny_llama: ReferenceModel) -> None:
    first, second = random_prompts([32, 32])
    engine = LLMEngine(
        tiny_llama.model_id, tiny_llama.path, engine_config(block_size=4, num_kv_blocks=12)
    )
    generate(engine, "first", first, SamplingParams(max_tokens=1))
    engine.drain_events()
    generate(engine, "second", second, SamplingParams(max_tokens=1))

    removed = [
        h for e in engine.drain_events() if isinstance(e, BlocksRemoved) for h in e.block_hashes
    ]
    assert removed, "filling the pool with a new prompt must evict cached blocks"
    before = engine.stats().prefix_cache_hits
    generate(engine, "first-again", first, SamplingParams(max_tokens=1))
    assert engine.stats().prefix_cache_hits - before < 28


def test_pending_prefill_counts_only_uncached_prompt_tokens(tiny_llama: ReferenceModel) -> None:
    system, question_a, question_b = random_prompts([20, 6, 9])
    engine = make_engine(tiny_llama, max_num_batched_tokens=8)
    generate(engine, "a", system + question_a)
    assert engine.stats().num_pending_prefill_tokens == 0

    engine.add_request("b", system + question_b, GREEDY)  # 20 cached tokens, 9 to prefill
    engine.add_request("c", question_a, GREEDY)
    assert engine.stats().num_pending_prefill_tokens == 9 + 6

    engine.step()  # 8 tokens of b's prefill
    assert engine.stats().num_pending_prefill_tokens == 1 + 6
    while engine.has_unfinished_requests():
        engine.step()
    assert engine.stats().num_pending_prefill_tokens == 0
