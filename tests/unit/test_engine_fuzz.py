"""Random traffic with random aborts always ends with every KV block free."""

from __future__ import annotations

import random

from prism.engine import FinishReason, LLMEngine, SamplingParams
from support.engines import engine_config
from support.models import ReferenceModel, random_prompts


def random_params(rng: random.Random) -> SamplingParams:
    return SamplingParams(
        max_tokens=rng.randint(1, 24),
        min_tokens=rng.choice([0, 0, 1]),
        temperature=rng.choice([0.0, 0.7, 1.0]),
        top_k=rng.choice([0, 5]),
        top_p=rng.choice([1.0, 0.9]),
        seed=rng.choice([None, rng.randint(0, 1000)]),
        stop_token_ids=rng.choice([[], [rng.randrange(256)]]),
        logprobs=rng.choice([None, 0, 3]),
    )


def test_random_requests_and_aborts_leave_no_block_behind(tiny_llama: ReferenceModel) -> None:
    rng = random.Random(1234)
    engine = LLMEngine(
        tiny_llama.model_id,
        tiny_llama.path,
        engine_config(block_size=4, num_kv_blocks=48, max_num_seqs=12, max_num_batched_tokens=40),
    )
    shared_prefixes = random_prompts([8, 12, 20], seed=7)
    live: set[str] = set()
    finished: dict[str, FinishReason] = {}
    submitted = 0
    steps = 0
    while submitted < 300 or engine.has_unfinished_requests():
        steps += 1
        for _ in range(min(rng.randint(0, 4), 300 - submitted)):
            prefix = rng.choice([[], *shared_prefixes])
            prompt = prefix + random_prompts([rng.randint(1, 40)], seed=submitted)[0]
            request_id = f"r{submitted}"
            engine.add_request(request_id, prompt, random_params(rng))
            live.add(request_id)
            submitted += 1
        if live and rng.random() < 0.15:
            victim = rng.choice(sorted(live))
            output = engine.abort_request(victim)
            assert output is not None and output.finish_reason is FinishReason.ABORT
            live.discard(victim)
            finished[victim] = FinishReason.ABORT
        for output in engine.step():
            assert output.request_id in live
            if output.finished:
                live.discard(output.request_id)
                finished[output.request_id] = output.finish_reason
        assert steps < 20_000, "the engine stopped making progress"

    stats = engine.stats()
    assert not live
    assert len(finished) == 300
    assert stats.num_running == stats.num_waiting == 0
    assert stats.num_free_kv_blocks == stats.num_kv_blocks
    assert stats.num_preemptions > 0, "the pool is small enough that preemption must happen"
    assert stats.prefix_cache_hits > 0
    assert engine.abort_request("r0") is None
