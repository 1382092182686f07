"""Prism's native CPU decode attention equals the torch path it replaces, and guards its reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prism.engine import LLMEngine, SamplingParams, cpu_kernels
from prism.engine.attention import AttentionBatch, paged_attention
from support.engines import engine_config, generate_alone
from support.models import ReferenceModel, random_prompts

BLOCK_SIZE = 4
NUM_BLOCKS = 40
HEADS, KV_HEADS, HEAD_DIM = 6, 2, 16


def _decode_step(dtype: torch.dtype, lengths: list[int]) -> tuple[torch.Tensor, ...]:
    """A query per sequence, a layer's caches and padded block tables on scattered blocks."""
    generator = torch.Generator().manual_seed(len(lengths))
    caches = torch.randn(2, KV_HEADS, NUM_BLOCKS, BLOCK_SIZE, HEAD_DIM, generator=generator)
    query = torch.randn(len(lengths), HEADS, HEAD_DIM, generator=generator)
    width = max(-(-length // BLOCK_SIZE) for length in lengths)
    blocks = torch.randperm(NUM_BLOCKS, generator=generator).tolist()
    tables = []
    for length in lengths:
        used = [blocks.pop() for _ in range(-(-length // BLOCK_SIZE))]
        tables.append(used + [0] * (width - len(used)))
    k_cache, v_cache = caches.to(dtype)
    return (
        query.to(dtype),
        k_cache,
        v_cache,
        torch.tensor(tables),
        torch.tensor(lengths),
    )


def _attend(query: torch.Tensor, *step: torch.Tensor) -> torch.Tensor:
    k_cache, v_cache, tables, lengths = step
    batch = AttentionBatch(
        slot_mapping=torch.empty(0, dtype=torch.long),
        num_decodes=query.shape[0],
        decode_block_tables=tables,
        decode_context_lens=lengths,
        prefills=[],
    )
    return paged_attention(query, k_cache, v_cache, batch)


LENGTHS = [1, 3, 4, 5, 17, 30]


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_native_decode_attention_equals_the_torch_path(
    dtype: torch.dtype, tolerance: float, request: pytest.FixtureRequest
) -> None:
    query, *step = _decode_step(dtype, LENGTHS)
    assert cpu_kernels.supports_decode_attention(step[0])
    native = _attend(query, *step)

    request.getfixturevalue("torch_path_only")
    assert not cpu_kernels.supports_decode_attention(step[0])
    reference = _attend(query, *step)

    assert native.dtype == dtype
    torch.testing.assert_close(native, reference, atol=tolerance, rtol=tolerance)


def test_padding_blocks_beyond_a_context_are_never_read() -> None:
    query, k_cache, v_cache, tables, lengths = _decode_step(torch.float32, LENGTHS)
    before = cpu_kernels.decode_attention(query, k_cache, v_cache, tables, lengths)
    padded = tables.clone()
    padded[0, 1:] = NUM_BLOCKS - 1  # the 1-token sequence's unused table entries
    k_cache[:, NUM_BLOCKS - 1] = float("nan")

    after = cpu_kernels.decode_attention(query, k_cache, v_cache, padded, lengths)

    torch.testing.assert_close(after[0], before[0], atol=0.0, rtol=0.0)


@pytest.mark.parametrize(
    ("bad_table", "bad_length"),
    [(NUM_BLOCKS, None), (-1, None), (None, 0), (None, 1000)],
    ids=["block-past-the-cache", "negative-block", "empty-context", "context-past-the-table"],
)
def test_out_of_range_blocks_or_lengths_are_refused(
    bad_table: int | None, bad_length: int | None
) -> None:
    query, k_cache, v_cache, tables, lengths = _decode_step(torch.float32, LENGTHS)
    if bad_table is not None:
        tables[-1, 0] = bad_table
    if bad_length is not None:
        lengths[-1] = bad_length

    with pytest.raises(ValueError, match="out of range"):
        cpu_kernels.decode_attention(query, k_cache, v_cache, tables, lengths)


@pytest.mark.parametrize(
    "compiler", ["prism-no-such-compiler", "false"], ids=["missing", "failing"]
)
def test_without_a_working_compiler_decodes_run_on_torch(
    compiler: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CXX", compiler)
    monkeypatch.setenv("PRISM_CACHE_DIR", str(tmp_path))
    cpu_kernels.native_kernels.cache_clear()
    try:
        query, *step = _decode_step(torch.float32, LENGTHS)
        assert not cpu_kernels.supports_decode_attention(step[0])
        expected = _attend(query, *step)
    finally:
        monkeypatch.undo()
        cpu_kernels.native_kernels.cache_clear()

    torch.testing.assert_close(_attend(query, *step), expected, atol=1e-6, rtol=1e-6)


def test_caches_of_another_dtype_are_refused() -> None:
    query, k_cache, v_cache, tables, lengths = _decode_step(torch.float16, LENGTHS)

    assert not cpu_kernels.supports_decode_attention(k_cache)
    with pytest.raises(ValueError, match="fp32 or bf16"):
        cpu_kernels.decode_attention(query, k_cache, v_cache, tables, lengths)


def test_loading_the_kernels_keeps_denormal_floats() -> None:
    assert cpu_kernels.native_kernels() is not None
    tiny = torch.tensor([1e-40], dtype=torch.float32)

    assert (tiny * 1.0).item() != 0.0


def test_greedy_tokens_are_the_same_with_the_kernels_off(
    tiny_llama: ReferenceModel, request: pytest.FixtureRequest
) -> None:
    prompts = random_prompts([3, 17, 40])
    params = SamplingParams(max_tokens=12, temperature=0.0)

    def generate() -> list[list[int]]:
        with LLMEngine(tiny_llama.model_id, tiny_llama.path, engine_config()) as engine:
            return [generate_alone(engine, str(i), p, params) for i, p in enumerate(prompts)]

    native = generate()
    request.getfixturevalue("torch_path_only")

    assert generate() == native
