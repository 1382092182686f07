"""Greedy outputs of Prism's engine equal HF ``generate`` token for token (fp32)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from prism.engine import LLMEngine, SamplingParams
from prism.models import apply_chat_template
from support.engines import engine_config, run_staggered
from support.models import LLAMA3_ROPE, TINY_SHAPE, ReferenceModel, random_prompts
from support.parity import assert_batch_parity, assert_greedy_parity

MAX_NEW_TOKENS = 24
GREEDY_ANSWER = SamplingParams(max_tokens=24, temperature=0.0)
PROMPT_LENGTHS = [1, 2, 3, 5, 8, 13, 15, 16, 17, 21, 31, 32, 33, 47, 64, 90]


TINY_SCENARIOS = {
    "defaults": engine_config(num_kv_blocks=256),
    "tiny-blocks-preemption": engine_config(block_size=2, num_kv_blocks=72),
    "chunked-prefill": engine_config(block_size=4, num_kv_blocks=512, max_num_batched_tokens=7),
    "no-prefix-cache": engine_config(block_size=8, num_kv_blocks=64, enable_prefix_caching=False),
}


@pytest.mark.parametrize("scenario", TINY_SCENARIOS)
def test_greedy_matches_hf_on_tiny_llama(tiny_llama: ReferenceModel, scenario: str) -> None:
    config = TINY_SCENARIOS[scenario]
    engine = LLMEngine(tiny_llama.model_id, tiny_llama.path, config)
    prompts = random_prompts(PROMPT_LENGTHS)

    outputs = run_staggered(engine, prompts, MAX_NEW_TOKENS)

    assert_batch_parity(tiny_llama.hf, prompts, outputs, MAX_NEW_TOKENS)
    stats = engine.stats()
    assert stats.num_free_kv_blocks == stats.num_kv_blocks
    if scenario == "tiny-blocks-preemption":
        assert stats.num_preemptions > 0


def test_chunked_prefill_splits_long_prompts(tiny_llama: ReferenceModel) -> None:
    engine = LLMEngine(
        tiny_llama.model_id,
        tiny_llama.path,
        engine_config(block_size=4, num_kv_blocks=64, max_num_batched_tokens=7),
    )
    engine.add_request("long", random_prompts([40])[0], SamplingParams(max_tokens=1))
    steps_before_first_token = 0
    while not (outputs := engine.step()):
        steps_before_first_token += 1
    assert steps_before_first_token == 5  # 40 prompt tokens at 7 per step: 6 steps
    assert outputs[0].finished


SMOLLM2_QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write one sentence about the sea.",
    "What is 12 plus 30?",
]
SMOLLM2_SCENARIOS = {
    "defaults": engine_config(kv_cache_bytes=256 << 20),
    "tiny-blocks-preemption-chunked": engine_config(
        block_size=4, num_kv_blocks=26, max_num_batched_tokens=24
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SMOLLM2_SCENARIOS)
def test_greedy_matches_hf_on_smollm2(
    smollm2: ReferenceModel, smollm2_tokenizer, scenario: str
) -> None:
    engine = LLMEngine(smollm2.model_id, smollm2.path, SMOLLM2_SCENARIOS[scenario])
    prompts = [
        apply_chat_template(smollm2_tokenizer, [{"role": "user", "content": question}])
        for question in SMOLLM2_QUESTIONS
    ]
    max_tokens = 20

    outputs = run_staggered(engine, prompts, max_tokens)

    for prompt, tokens in zip(prompts, outputs, strict=True):
        assert_greedy_parity(smollm2.hf, prompt, tokens, max_tokens)
    if scenario.startswith("tiny-blocks"):
        assert engine.stats().num_preemptions > 0


def tiny_variant(folder, model) -> ReferenceModel:
    model.eval().save_pretrained(folder)
    return ReferenceModel(folder.name, folder, model)


@pytest.fixture(scope="module")
def architecture_variants(tmp_path_factory: pytest.TempPathFactory) -> list[ReferenceModel]:
    """Qwen2 (q/k/v biases), Qwen3 (q/k head norms, a head_dim of its own) and a Llama with
    llama3 RoPE scaling, o_proj bias, tied head."""
    shape = TINY_SHAPE | {"bos_token_id": None, "eos_token_id": None}
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("variants")
    qwen = Qwen2ForCausalLM(Qwen2Config(**shape))
    llama = LlamaForCausalLM(
        LlamaConfig(
            **shape, rope_parameters=LLAMA3_ROPE, attention_bias=True, tie_word_embeddings=True
        )
    )
    qwen3 = Qwen3ForCausalLM(Qwen3Config(**shape, head_dim=24))
    for module in (qwen, llama):  # random biases, so a dropped bias shows in the output
        for name, parameter in module.named_parameters():
            if name.endswith("bias"):
                torch.nn.init.normal_(parameter, std=0.5)
    for name, parameter in qwen3.named_parameters():  # head norms that are not all ones
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            torch.nn.init.normal_(parameter, mean=1.0, std=0.5)
    return [
        tiny_variant(folder / "qwen2", qwen),
        tiny_variant(folder / "qwen3", qwen3),
        tiny_variant(folder / "llama3-rope", llama),
    ]


def test_greedy_matches_hf_on_architecture_variants(
    architecture_variants: list[ReferenceModel],
) -> None:
    prompts = random_prompts([3, 17, 70, 120])
    for model in architecture_variants:
        engine = LLMEngine(model.model_id, model.path, engine_config(num_kv_blocks=64))
        outputs = run_staggered(engine, prompts, 16)
        for prompt, tokens in zip(prompts, outputs, strict=True):
            assert_greedy_parity(model.hf, prompt, tokens, 16)


@pytest.mark.slow
def test_bf16_weights_keep_the_answer(smollm2: ReferenceModel, smollm2_tokenizer) -> None:
    """bf16 matrices (fp32 elsewhere) are a speed mode, not a parity mode: same answer."""
    config = engine_config(kv_cache_bytes=64 << 20, weight_dtype="bfloat16")
    engine = LLMEngine(smollm2.model_id, smollm2.path, config, smollm2_tokenizer)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    engine.add_request("q", apply_chat_template(smollm2_tokenizer, question), GREEDY_ANSWER)
    text = ""
    while engine.has_unfinished_requests():
        text += "".join(output.new_text for output in engine.step())
    assert engine.runner.model.embed_weight.dtype == torch.bfloat16
    assert "Paris" in text
