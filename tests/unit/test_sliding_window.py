"""Sliding-window attention: HF's windowed masks on every path, and KV blocks given back
as the window slides past them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import (
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.masking_utils import and_masks, causal_mask_function, sliding_window_overlay

from prism.engine import LLMEngine, SamplingParams, cpu_kernels
from prism.engine.attention import (
    AttentionBatch,
    PrefillSpan,
    _decode_attention_sdpa,
    paged_attention,
)
from prism.engine.kv_cache_manager import NO_HIT, KVCacheManager, PrefixHit
from prism.engine.request import RELEASED_BLOCK
from support.engine_requests import cached_request, commit, compute, engine_request
from support.engines import engine_config, run_staggered
from support.models import TINY_SHAPE, ReferenceModel, random_prompts
from support.parity import assert_batch_parity, assert_greedy_parity

WINDOW = 12
BLOCK_SIZE = 4
MAX_NEW_TOKENS = 16
PROMPT_LENGTHS = [1, 11, 13, 30, 47, 70]
NO_SPECIAL_TOKENS = {"bos_token_id": None, "eos_token_id": None}


def save_reference(folder: Path, model: PreTrainedModel) -> ReferenceModel:
    model.eval().save_pretrained(folder)
    return ReferenceModel(folder.name, folder, model)


@pytest.fixture(scope="module")
def tiny_mistral(tmp_path_factory: pytest.TempPathFactory) -> ReferenceModel:
    """Every layer slides a window of ``WINDOW`` tokens."""
    torch.manual_seed(11)
    config = MistralConfig(**TINY_SHAPE, **NO_SPECIAL_TOKENS, sliding_window=WINDOW)
    folder = tmp_path_factory.mktemp("models") / "tiny-mistral"
    return save_reference(folder, MistralForCausalLM(config))


@pytest.fixture(scope="module")
def tiny_mixed_qwen2(tmp_path_factory: pytest.TempPathFactory) -> ReferenceModel:
    """A global first layer, then a windowed one."""
    torch.manual_seed(12)
    config = Qwen2Config(
        **TINY_SHAPE,
        **NO_SPECIAL_TOKENS,
        use_sliding_window=True,
        sliding_window=WINDOW,
        max_window_layers=1,
    )
    folder = tmp_path_factory.mktemp("models") / "tiny-mixed-qwen2"
    return save_reference(folder, Qwen2ForCausalLM(config))


def prefix_hit_prompts(prompts: list[list[int]]) -> list[list[int]]:
    """A prompt again, and two sharing a long prefix (past the window) with an earlier one."""
    long_prompt = prompts[-1]
    return [prompts[3], long_prompt[:41] + random_prompts([9], seed=2)[0], [*long_prompt, 7, 8]]


def assert_parity_with_hits(engine: LLMEngine, model: ReferenceModel) -> None:
    """A staggered batch, then prompts that hit the prefix cache it left; no block leaks."""
    prompts = random_prompts(PROMPT_LENGTHS)
    outputs = run_staggered(engine, prompts, MAX_NEW_TOKENS)
    assert_batch_parity(model.hf, prompts, outputs, MAX_NEW_TOKENS)
    hits = engine.stats().prefix_cache_hits
    again = prefix_hit_prompts(prompts)

    outputs = run_staggered(engine, again, MAX_NEW_TOKENS)
    assert_batch_parity(model.hf, again, outputs, MAX_NEW_TOKENS)
    stats = engine.stats()
    assert stats.prefix_cache_hits - hits == 4 * (7 + 10 + 17)  # the shared full blocks
    assert stats.num_free_kv_blocks == stats.num_kv_blocks


def test_greedy_matches_hf_on_a_windowed_mistral_with_chunks_and_hits(
    tiny_mistral: ReferenceModel,
) -> None:
    config = engine_config(block_size=BLOCK_SIZE, num_kv_blocks=128, max_num_batched_tokens=7)
    engine = LLMEngine(tiny_mistral.model_id, tiny_mistral.path, config)
    assert engine.kv.window == WINDOW and engine.max_model_len == 512

    assert_parity_with_hits(engine, tiny_mistral)


def test_greedy_matches_hf_on_a_windowed_mistral_under_preemption(
    tiny_mistral: ReferenceModel,
) -> None:
    config = engine_config(block_size=BLOCK_SIZE, num_kv_blocks=14, max_num_batched_tokens=8)
    engine = LLMEngine(tiny_mistral.model_id, tiny_mistral.path, config)
    prompts = random_prompts(PROMPT_LENGTHS)

    outputs = run_staggered(engine, prompts, MAX_NEW_TOKENS)

    assert_batch_parity(tiny_mistral.hf, prompts, outputs, MAX_NEW_TOKENS)
    stats = engine.stats()
    assert stats.num_preemptions > 0
    assert stats.num_free_kv_blocks == stats.num_kv_blocks


def test_greedy_matches_hf_on_mixed_global_and_windowed_layers(
    tiny_mixed_qwen2: ReferenceModel,
) -> None:
    config = engine_config(block_size=BLOCK_SIZE, num_kv_blocks=128)  # whole prompts
    engine = LLMEngine(tiny_mixed_qwen2.model_id, tiny_mixed_qwen2.path, config)
    assert engine.model_config.layer_windows == (None, WINDOW)
    assert engine.kv.window is None  # the global layer reads every block

    assert_parity_with_hits(engine, tiny_mixed_qwen2)


def generate_counting_blocks(
    engine: LLMEngine, prompt: list[int], num_tokens: int
) -> tuple[list[int], list[int]]:
    """Generate ``num_tokens`` tokens alone; the tokens and the blocks in use after each step."""
    params = SamplingParams(max_tokens=num_tokens, temperature=0.0, ignore_eos=True)
    engine.add_request("long", prompt, params)
    tokens: list[int] = []
    used: list[int] = []
    while engine.has_unfinished_requests():
        for output in engine.step():
            tokens.extend(output.new_token_ids)
        stats = engine.stats()
        used.append(stats.num_kv_blocks - stats.num_free_kv_blocks)
    return tokens, used


@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_a_long_generation_holds_only_the_blocks_of_its_window(
    tiny_mistral: ReferenceModel,
    tiny_llama: ReferenceModel,
    kernels: str,
    request: pytest.FixtureRequest,
) -> None:
    if kernels == "torch":
        request.getfixturevalue("torch_path_only")
    config = engine_config(block_size=BLOCK_SIZE, num_kv_blocks=128)
    prompt = random_prompts([30])[0]  # prefilled whole, past the window
    num_tokens = 200
    mistral = LLMEngine(tiny_mistral.model_id, tiny_mistral.path, config)
    llama = LLMEngine(tiny_llama.model_id, tiny_llama.path, config)

    tokens, windowed_used = generate_counting_blocks(mistral, prompt, num_tokens)
    _, global_used = generate_counting_blocks(llama, prompt, num_tokens)

    assert_greedy_parity(tiny_mistral.hf, prompt, tokens, num_tokens)
    assert max(windowed_used) == WINDOW // BLOCK_SIZE + 1
    assert global_used[:-1] == sorted(global_used[:-1])  # grows with the sequence
    assert max(global_used) == 57  # the 228 tokens computed before the last step
    assert windowed_used[-1] == global_used[-1] == 0


def test_a_windowed_model_serves_contexts_its_cache_could_not_hold_whole(
    tiny_mistral: ReferenceModel, tiny_llama: ReferenceModel
) -> None:
    config = engine_config(block_size=BLOCK_SIZE, num_kv_blocks=8, max_num_batched_tokens=8)

    windowed = LLMEngine(tiny_mistral.model_id, tiny_mistral.path, config)
    assert windowed.max_model_len == 512  # a request holds 6 blocks at most
    assert windowed.kv.peak_blocks(512, 8) == 6
    assert LLMEngine(tiny_llama.model_id, tiny_llama.path, config).max_model_len == 32


def test_two_ranks_give_the_windowed_tokens_of_one(tiny_mistral: ReferenceModel) -> None:
    config = engine_config(
        block_size=BLOCK_SIZE, num_kv_blocks=40, max_num_batched_tokens=7, num_threads=1
    )
    prompts = random_prompts([3, 30, 47])
    with LLMEngine(tiny_mistral.model_id, tiny_mistral.path, config) as single:
        expected = run_staggered(single, prompts, MAX_NEW_TOKENS)
    sharded_config = replace(config, tensor_parallel_size=2)
    with LLMEngine(tiny_mistral.model_id, tiny_mistral.path, sharded_config) as sharded:
        assert run_staggered(sharded, prompts, MAX_NEW_TOKENS) == expected
        stats = sharded.stats()
    assert stats.num_free_kv_blocks == stats.num_kv_blocks


# The cache manager, without a model: a window of 6 over blocks of 4 tokens.

SMALL_WINDOW = 6


def windowed_kv(num_blocks: int = 16, window: int | None = SMALL_WINDOW) -> KVCacheManager:
    return KVCacheManager(num_blocks, BLOCK_SIZE, True, window)


def test_blocks_before_the_next_tokens_window_are_released_and_stay_cached() -> None:
    kv = windowed_kv()
    request = engine_request("r", list(range(18)))

    compute(kv, request, 18)  # token 18 sees tokens 13..18: blocks 0..2 hold 0..11

    assert request.block_ids[:3] == [RELEASED_BLOCK] * 3 and request.num_released_blocks == 3
    assert len(request.held_block_ids) == 2 and kv.pool.num_free == 14
    assert all(kv.pool.lookup(h) is not None for h in request.block_hashes[:3])
    kv.free(request)
    assert kv.pool.num_free == 16 and request.block_ids == []


def test_a_decoding_request_holds_a_bounded_number_of_blocks() -> None:
    kv = windowed_kv()
    request = engine_request("r", list(range(5)))
    compute(kv, request, 5)
    held = []
    for token in range(60):
        request.append_token(token)
        assert kv.allocate(request, 1)
        held.append(len(request.held_block_ids))  # while the step runs
        commit(kv, request, 1)

    assert max(held) == kv.peak_blocks(request.num_tokens, 1) == 3
    assert len(request.block_ids) == -(-request.num_tokens // BLOCK_SIZE)  # still by position


def test_without_a_window_nothing_is_released() -> None:
    kv = windowed_kv(window=None)
    request = engine_request("r", list(range(18)))

    compute(kv, request, 18)

    assert request.num_released_blocks == 0 and len(request.held_block_ids) == 5
    assert kv.peak_blocks(1000, 1) == 250


def test_a_windowed_hit_holds_only_the_blocks_its_first_new_token_sees() -> None:
    kv = windowed_kv()
    done = cached_request(kv, list(range(20)))
    again = engine_request("again", [*range(20), 50, 51])
    in_window = tuple(kv.pool.lookup(h) for h in done.block_hashes[3:5])

    hit = kv.cached_prefix(again)  # token 20 sees tokens 15..20: blocks 3 and 4
    assert hit == PrefixHit(5, in_window)
    assert kv.allocate(again, 2, hit)

    assert again.block_ids[:5] == [RELEASED_BLOCK] * 3 + list(in_window)
    assert (again.num_computed_tokens, again.num_released_blocks) == (20, 3)
    assert kv.pool.num_free == 16 - 3  # two cached blocks revived, one new
    kv.free(again)
    assert kv.pool.num_free == 16


def test_released_blocks_are_evicted_first_and_a_windowed_hit_needs_none_of_them() -> None:
    kv = windowed_kv()
    prompt = list(range(20))
    done = cached_request(kv, prompt)
    leading = [kv.pool.lookup(h) for h in done.block_hashes[:3]]

    taken = kv.pool.allocate(14)  # the 11 untouched blocks, then the 3 released first
    assert set(leading) <= set(taken)
    assert all(kv.pool.lookup(h) is None for h in done.block_hashes[:3])
    kv.pool.release(taken)

    assert kv.cached_prefix(engine_request("again", [*prompt, 1])).num_blocks == 5


def test_without_a_window_a_hit_needs_every_leading_block() -> None:
    kv = windowed_kv(window=None)
    prompt = list(range(20))
    done = cached_request(kv, prompt)
    tail = [kv.pool.lookup(h) for h in done.block_hashes[3:5]]
    kv.pool.clear_cache()
    kv.pool.register(tail, done.block_hashes[3:5])  # as if the leading blocks were evicted

    assert kv.cached_prefix(engine_request("again", [*prompt, 1])) == NO_HIT


def test_a_windowed_hit_ends_where_the_prompts_part() -> None:
    kv = windowed_kv()
    done = cached_request(kv, list(range(20)))
    parted = engine_request("parted", [*range(16), *range(90, 98)])

    hit = kv.cached_prefix(parted)  # token 16 sees tokens 11..16: blocks 2 and 3

    assert hit == PrefixHit(4, tuple(kv.pool.lookup(h) for h in done.block_hashes[2:4]))


# The attention paths against HF's definition and a plain reference.

HEADS, KV_HEADS, HEAD_DIM, NUM_BLOCKS = 6, 2, 16, 40
DECODE_LENGTHS = [1, 3, 6, 7, 13, 30]


def hf_window_mask(query_positions: torch.Tensor, key_positions: torch.Tensor, window: int):
    visible = and_masks(causal_mask_function, sliding_window_overlay(window))
    return visible(0, 0, query_positions[:, None], key_positions[None, :])


def test_prefill_masks_follow_hf_sliding_window() -> None:
    span = PrefillSpan(query_start=0, query_len=7, context_len=20, block_ids=torch.zeros(5))
    keys = torch.arange(20)

    assert torch.equal(span.mask(SMALL_WINDOW), hf_window_mask(keys[13:], keys, SMALL_WINDOW))
    assert torch.equal(span.mask(None), keys[None, :] <= keys[13:, None])
    assert span.mask(SMALL_WINDOW) is span.mask(SMALL_WINDOW)  # built once per window
    assert span.mask(20) is span.mask(None)  # a window past the first key cuts nothing
    whole = PrefillSpan(query_start=0, query_len=20, context_len=20, block_ids=torch.zeros(5))
    assert whole.mask(None) is None  # plain causal
    assert torch.equal(whole.mask(SMALL_WINDOW), hf_window_mask(keys, keys, SMALL_WINDOW))


def decode_batch(
    lengths: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, AttentionBatch]:
    """A query per sequence, a layer's caches and padded block tables on scattered blocks."""
    generator = torch.Generator().manual_seed(len(lengths))
    k_cache, v_cache = torch.randn(
        2, KV_HEADS, NUM_BLOCKS, BLOCK_SIZE, HEAD_DIM, generator=generator
    ).unbind()
    query = torch.randn(len(lengths), HEADS, HEAD_DIM, generator=generator)
    width = max(-(-length // BLOCK_SIZE) for length in lengths)
    blocks = torch.randperm(NUM_BLOCKS, generator=generator).tolist()
    tables = [[blocks.pop() for _ in range(-(-n // BLOCK_SIZE))] for n in lengths]
    batch = AttentionBatch(
        slot_mapping=torch.empty(0, dtype=torch.long),
        num_decodes=len(lengths),
        decode_block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables]),
        decode_context_lens=torch.tensor(lengths),
        prefills=[],
    )
    return query, k_cache, v_cache, batch


def reference_decodes(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    batch: AttentionBatch,
    window: int,
) -> torch.Tensor:
    """Each decode's softmax attention over the rows of its last ``window`` positions."""
    tables, lengths = batch.decode_tables()
    out = torch.empty_like(query)
    for seq, length in enumerate(lengths.tolist()):
        rows = range(max(0, length - window), length)
        blocks = [tables[seq, row // BLOCK_SIZE] for row in rows]
        offsets = [row % BLOCK_SIZE for row in rows]
        group = HEADS // KV_HEADS
        keys = k_cache[:, blocks, offsets].repeat_interleave(group, dim=0)  # [heads, rows, dim]
        values = v_cache[:, blocks, offsets].repeat_interleave(group, dim=0)
        scores = (query[seq, :, None, :] @ keys.transpose(1, 2)) * HEAD_DIM**-0.5
        out[seq] = (scores.softmax(-1) @ values)[:, 0]
    return out


def test_the_native_decode_kernel_reads_only_each_window() -> None:
    query, k_cache, v_cache, batch = decode_batch(DECODE_LENGTHS)
    expected = reference_decodes(query, k_cache, v_cache, batch, SMALL_WINDOW)
    tables, lengths = batch.decode_tables()
    starts = batch.decode_start(SMALL_WINDOW)
    assert starts.tolist() == [0, 0, 0, 1, 7, 24]
    released = tables.clone()
    for seq, start in enumerate(starts.tolist()):  # blocks wholly before the window
        released[seq, : start // BLOCK_SIZE] = -1

    got = cpu_kernels.decode_attention(query, k_cache, v_cache, released, lengths, starts)

    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        cpu_kernels.decode_attention(query, k_cache, v_cache, tables, lengths, lengths)


def test_the_torch_decode_paths_mask_each_window(request: pytest.FixtureRequest) -> None:
    query, k_cache, v_cache, batch = decode_batch(DECODE_LENGTHS)
    expected = reference_decodes(query, k_cache, v_cache, batch, SMALL_WINDOW)
    tables, _ = batch.decode_tables()
    keys = k_cache[:, tables].flatten(2, 3)  # [kv_heads, seqs, table slots, dim]
    values = v_cache[:, tables].flatten(2, 3)
    mask = batch.decode_key_mask(BLOCK_SIZE, SMALL_WINDOW)
    assert mask is batch.decode_key_mask(BLOCK_SIZE, SMALL_WINDOW)  # built once per window

    sdpa = _decode_attention_sdpa(query, keys, values, mask)  # the path off the CPU
    request.getfixturevalue("torch_path_only")
    matmul = paged_attention(query, k_cache, v_cache, batch, SMALL_WINDOW)  # CPU torch path

    torch.testing.assert_close(sdpa, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(matmul, expected, atol=1e-5, rtol=1e-5)
