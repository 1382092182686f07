"""RoPE scalings (linear, llama3, yarn, dynamic NTK, longrope) against HF transformers (fp32).

Every model has an original context of 64 tokens, so tiny prompts cross it. ``dynamic``
reads it from ``max_position_embeddings``, the others from
``original_max_position_embeddings``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from prism.engine import LLMEngine
from prism.engine.attention import AttentionBatch, PrefillSpan
from prism.engine.rotary import RotaryEmbedding, context_lengths
from prism.errors import InvalidRequest
from prism.models import ModelConfig
from support.engines import engine_config, run_staggered
from support.models import LLAMA3_ROPE, TINY_SHAPE, ReferenceModel, random_prompts
from support.parity import assert_greedy_parity

ORIGINAL_LEN = 64
HEAD_DIM = TINY_SHAPE["hidden_size"] // TINY_SHAPE["num_attention_heads"]
MAX_NEW_TOKENS = 12

SCALINGS: dict[str, dict[str, Any]] = {
    "linear": {"rope_parameters": {"rope_type": "linear", "factor": 4.0}},
    "llama3": {"rope_parameters": LLAMA3_ROPE},
    "yarn": {
        "rope_parameters": {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": ORIGINAL_LEN,
        },
        "max_position_embeddings": 4 * ORIGINAL_LEN,
    },
    "yarn-implicit-factor-mscale": {  # factor 8 from the lengths; a ramp left untruncated
        "rope_parameters": {
            "rope_type": "yarn",
            "factor": None,
            "original_max_position_embeddings": ORIGINAL_LEN,
            "mscale": 1.0,
            "mscale_all_dim": 0.5,
            "beta_fast": 16,
            "truncate": False,
        },
        "max_position_embeddings": 8 * ORIGINAL_LEN,
    },
    "dynamic": {
        "rope_parameters": {"rope_type": "dynamic", "factor": 4.0},
        "max_position_embeddings": ORIGINAL_LEN,
    },
    "longrope": {  # factor 4 from the lengths
        "rope_parameters": {
            "rope_type": "longrope",
            "original_max_position_embeddings": ORIGINAL_LEN,
            "short_factor": [1.0 + 0.05 * i for i in range(HEAD_DIM // 2)],
            "long_factor": [1.0 + 0.75 * i for i in range(HEAD_DIM // 2)],
        },
        "max_position_embeddings": 4 * ORIGINAL_LEN,
    },
}
LENGTH_DEPENDENT = ("dynamic", "longrope")


def hf_config(scaling: str) -> LlamaConfig:
    shape = TINY_SHAPE | {"bos_token_id": None, "eos_token_id": None} | SCALINGS[scaling]
    return LlamaConfig(**shape, architectures=["LlamaForCausalLM"])


def prism_rotary(config: LlamaConfig, folder: Path) -> RotaryEmbedding:
    """Prism's rotary embedding, from the config as Prism reads it from ``config.json``."""
    config.save_pretrained(folder)
    model_config = ModelConfig.from_folder(folder)
    return RotaryEmbedding(
        model_config.head_dim,
        model_config.rope_theta,
        model_config.rope_scaling,
        4 * ORIGINAL_LEN,
        torch.float32,
        torch.device("cpu"),
        max_position_embeddings=model_config.max_position_embeddings,
    )


def hf_rows(
    config: LlamaConfig, positions: list[int], length: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """HF's (cos, sin) of each of ``positions`` in a forward over ``length`` tokens.

    HF's dynamic rotary keeps state between forwards: each call gets a fresh module.
    """
    rotary = LlamaRotaryEmbedding(config)
    cos, sin = rotary(torch.zeros(1), torch.arange(length)[None])
    return [(cos[0, position], sin[0, position]) for position in positions]


def batch_of(decode_lens: list[int], prefills: list[tuple[int, int]]) -> AttentionBatch:
    """A step of decodes with these context lengths, then prefill chunks (start, end)."""
    spans, start = [], len(decode_lens)
    for first, end in prefills:
        span = PrefillSpan(
            query_start=start,
            query_len=end - first,
            context_len=end,
            block_ids=torch.zeros(1, dtype=torch.long),
        )
        spans.append(span)
        start += end - first
    return AttentionBatch(
        slot_mapping=torch.zeros(start, dtype=torch.long),
        num_decodes=len(decode_lens),
        decode_block_tables=torch.zeros(len(decode_lens), 1, dtype=torch.long),
        decode_context_lens=torch.tensor(decode_lens) if decode_lens else None,
        prefills=spans,
    )


def assert_rows_match(
    rotary: RotaryEmbedding,
    batch: AttentionBatch,
    positions: list[int],
    expected: list[tuple[torch.Tensor, torch.Tensor]],
) -> None:
    """Prism's rotation of ``positions`` in ``batch`` is HF's (cos, sin), row by row."""
    rotation = rotary.at(torch.tensor(positions), batch)
    half = HEAD_DIM // 2
    for row, (cos, sin) in enumerate(expected):
        torch.testing.assert_close(rotation.cos[row, 0], cos, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            rotation.signed_sin[row, 0, half:], sin[half:], rtol=0, atol=1e-6
        )
        torch.testing.assert_close(
            rotation.signed_sin[row, 0, :half], -sin[:half], rtol=0, atol=1e-6
        )


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("length", [10, ORIGINAL_LEN, ORIGINAL_LEN + 1, 150])
def test_one_chunk_prefill_rotates_as_hf(scaling: str, length: int, tmp_path: Path) -> None:
    config = hf_config(scaling)
    rotary = prism_rotary(config, tmp_path)
    positions = list(range(length))
    expected = hf_rows(config, positions, length)

    assert_rows_match(rotary, batch_of([], [(0, length)]), positions, expected)


@pytest.mark.parametrize("scaling", LENGTH_DEPENDENT)
def test_each_token_rotates_for_its_own_context_length(scaling: str, tmp_path: Path) -> None:
    """Decodes at their context lengths and prefill chunks at their ends, in one step: each
    token as in HF's forward over its own request's context."""
    config = hf_config(scaling)
    rotary = prism_rotary(config, tmp_path)
    decode_lens, chunks = [100, 30, 65], [(0, 10), (60, 70), (90, 130)]
    batch = batch_of(decode_lens, chunks)
    tokens = [(n - 1, n) for n in decode_lens]
    tokens += [(position, end) for first, end in chunks for position in range(first, end)]
    expected = [hf_rows(config, [position], length)[0] for position, length in tokens]

    positions = torch.tensor([p for p, _ in tokens])
    assert context_lengths(positions, batch).tolist() == [n for _, n in tokens]
    assert_rows_match(rotary, batch, [p for p, _ in tokens], expected)


@pytest.mark.parametrize(
    ("scaling", "attention_factor"),
    [
        ("yarn", 0.1 * math.log(4) + 1),
        ("yarn-implicit-factor-mscale", (0.1 * math.log(8) + 1) / (0.05 * math.log(8) + 1)),
        ("longrope", math.sqrt(1 + math.log(4) / math.log(ORIGINAL_LEN))),
    ],
)
def test_attention_factor_scales_cos_and_sin(
    scaling: str, attention_factor: float, tmp_path: Path
) -> None:
    rotary = prism_rotary(hf_config(scaling), tmp_path)
    positions = torch.tensor([0, 1, 2 * ORIGINAL_LEN])
    rotation = rotary.at(
        positions, batch_of([], [(0, 1), (1, 2), (2 * ORIGINAL_LEN, 2 * ORIGINAL_LEN + 1)])
    )

    norms = (rotation.cos**2 + rotation.signed_sin**2).sqrt()  # cos^2 + sin^2 = factor^2
    torch.testing.assert_close(norms, torch.full_like(norms, attention_factor))


def test_given_attention_factor_wins(tmp_path: Path) -> None:
    config = hf_config("yarn")
    config.rope_parameters["attention_factor"] = 0.75
    rotary = prism_rotary(config, tmp_path)

    assert rotary.cos[0, 0].item() == pytest.approx(0.75)


def test_unknown_rope_type_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="'proportional'"):
        RotaryEmbedding(
            HEAD_DIM, 1e4, {"rope_type": "proportional"}, 8, torch.float32, torch.device("cpu")
        )


ENGINE_SCALINGS = ("linear", "yarn", *LENGTH_DEPENDENT)
QK_SCALE = 6.0


def sharpen_attention(model: LlamaForCausalLM) -> None:
    """Larger query and key projections: attention that follows the rotation closely, so a
    wrong scaling shows in the greedy output."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                parameter.mul_(QK_SCALE)


@pytest.fixture(scope="module")
def scaled_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ReferenceModel]:
    """A tiny random Llama per scaling, saved as an HF folder."""
    folder = tmp_path_factory.mktemp("rope-scaling")
    models = {}
    for index, scaling in enumerate(ENGINE_SCALINGS):
        torch.manual_seed(index)
        model = LlamaForCausalLM(hf_config(scaling)).eval()
        sharpen_attention(model)
        model.save_pretrained(folder / scaling)
        models[scaling] = ReferenceModel(scaling, folder / scaling, model)
    return models


def assert_parity_with_fresh_hf(
    model: ReferenceModel, prompts: list[list[int]], outputs: list[list[int]]
) -> None:
    """Greedy parity, each HF reference from a fresh rotary module: HF's dynamic NTK keeps the
    frequencies of the longest context it has seen until a shorter-than-original one comes,
    so a reference would otherwise depend on the prompts checked before it."""
    for prompt, tokens in zip(prompts, outputs, strict=True):
        model.hf.model.rotary_emb = LlamaRotaryEmbedding(model.hf.config)
        assert_greedy_parity(model.hf, prompt, tokens, MAX_NEW_TOKENS)


@pytest.mark.parametrize("scaling", ENGINE_SCALINGS)
def test_mixed_batch_matches_hf(scaled_models: dict[str, ReferenceModel], scaling: str) -> None:
    """Prompts shorter and longer than the original context, each prefilled in one chunk,
    and a generation that crosses it; the last prompt joins while the others decode."""
    model = scaled_models[scaling]
    config = engine_config(num_kv_blocks=64, max_model_len=4 * ORIGINAL_LEN)
    engine = LLMEngine(model.model_id, model.path, config)
    prompts = random_prompts([3, 55, 90, 70])

    outputs = run_staggered(engine, prompts, MAX_NEW_TOKENS)

    assert_parity_with_fresh_hf(model, prompts, outputs)


@pytest.mark.parametrize("scaling", ["yarn", *LENGTH_DEPENDENT])
def test_chunked_prefill_and_prefix_hits_match_hf(
    scaled_models: dict[str, ReferenceModel], scaling: str
) -> None:
    """Prompts prefilled in chunks of a few tokens, then again from the prefix cache.

    ``yarn`` rotates the same at any context length, so its prompts pass the original
    context. ``dynamic`` and ``longrope`` keep the rotation of the step that wrote
    each key: their chunks and cached prefixes stay within the original context, where HF's
    one-pass prefill rotates the same, and their generations cross it by decoding.
    """
    model = scaled_models[scaling]
    config = engine_config(
        block_size=4, num_kv_blocks=128, max_num_batched_tokens=7, max_model_len=4 * ORIGINAL_LEN
    )
    engine = LLMEngine(model.model_id, model.path, config)
    lengths = [40, 60] if scaling in LENGTH_DEPENDENT else [40, 90]
    prompts = random_prompts(lengths, seed=2)

    first = run_staggered(engine, prompts, MAX_NEW_TOKENS)
    again = run_staggered(engine, prompts, MAX_NEW_TOKENS)

    assert engine.stats().prefix_cache_hits > 0
    assert_parity_with_fresh_hf(model, prompts, first)
    assert_parity_with_fresh_hf(model, prompts, again)
