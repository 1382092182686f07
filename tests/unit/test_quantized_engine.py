"""A quantized engine generates what HF generates with the same quantized weights, dequantized."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaForCausalLM

from prism.engine import LLMEngine, SamplingParams
from prism.engine.scoring import score_tokens
from prism.models.quantized import QuantizationSpec
from support.engines import engine_config, generate_alone, run_staggered
from support.models import ReferenceModel, random_prompts
from support.parity import assert_batch_parity

MAX_NEW_TOKENS = 16
PROMPT_LENGTHS = [1, 3, 8, 15, 16, 17, 33, 64]
GREEDY_FOUR = SamplingParams(max_tokens=4, temperature=0.0)
MODES = {"int8": QuantizationSpec(8), "int4": QuantizationSpec(4, 32)}


def _dequantized_twin(model: LlamaForCausalLM, spec: QuantizationSpec) -> LlamaForCausalLM:
    """HF's model with every matrix replaced by its quantized-then-dequantized value."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for param in twin.parameters():
            if param.dim() == 2:
                param.copy_(spec.quantize(param).dequantize())
    return twin


@pytest.mark.parametrize(
    ("mode", "scenario"),
    [
        ("int8", {"num_kv_blocks": 256}),
        ("int4", {"block_size": 4, "num_kv_blocks": 512, "max_num_batched_tokens": 7}),
    ],
    ids=["int8", "int4-chunked-prefill"],
)
def test_quantized_greedy_matches_hf_with_dequantized_weights(
    tiny_llama: ReferenceModel, mode: str, scenario: dict[str, int]
) -> None:
    reference = _dequantized_twin(tiny_llama.hf, MODES[mode])
    prompts = random_prompts(PROMPT_LENGTHS)
    with LLMEngine(
        tiny_llama.model_id, tiny_llama.path, engine_config(quantization=mode, **scenario)
    ) as engine:
        outputs = run_staggered(engine, prompts, MAX_NEW_TOKENS)
        stats = engine.stats()

    assert_batch_parity(reference, prompts, outputs, MAX_NEW_TOKENS)
    assert stats.num_free_kv_blocks == stats.num_kv_blocks


def test_quantized_weights_take_a_fraction_of_the_full_precision_bytes(
    tiny_llama: ReferenceModel,
) -> None:
    sizes = {}
    for mode in ("none", "int8", "int4"):
        with LLMEngine(
            tiny_llama.model_id, tiny_llama.path, engine_config(quantization=mode)
        ) as engine:
            sizes[mode] = engine.runner.weight_bytes()

    assert sizes["int8"] < 0.3 * sizes["none"]
    assert sizes["int4"] < 0.2 * sizes["none"]


def test_scoring_returns_each_tokens_log_probability_and_frees_its_blocks(
    tiny_llama: ReferenceModel,
) -> None:
    tokens = random_prompts([50])[0]
    with LLMEngine(tiny_llama.model_id, tiny_llama.path, engine_config()) as engine:
        scores = score_tokens(engine, tokens, chunk_tokens=16)
        stats = engine.stats()

    with torch.no_grad():
        logits = tiny_llama.hf(torch.tensor([tokens])).logits[0, :-1].float()
    expected = logits.log_softmax(-1).gather(1, torch.tensor(tokens[1:])[:, None])[:, 0]
    torch.testing.assert_close(scores.logprobs, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(scores.top_ids, logits.argmax(-1))
    assert stats.num_free_kv_blocks == stats.num_kv_blocks


def test_a_quantized_prefill_chunk_that_samples_nothing_runs(tiny_llama: ReferenceModel) -> None:
    config = engine_config(quantization="int4", block_size=4, max_num_batched_tokens=7)
    with LLMEngine(tiny_llama.model_id, tiny_llama.path, config) as engine:
        tokens = generate_alone(engine, "long", random_prompts([40])[0], GREEDY_FOUR)

    assert len(tokens) == 4
