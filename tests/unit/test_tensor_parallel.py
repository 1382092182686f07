"""Tensor parallel on CPU (gloo): two ranks as local processes give the tokens of one."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from prism.engine import LLMEngine, SamplingParams
from prism.engine.step_input import PrefillInput, StepInput
from prism.errors import IncompatibleSettings, RankLost
from prism.models import load_tokenizer
from prism.structured_output import StructuredOutput
from support.engines import engine_config
from support.models import TINY_SHAPE, ReferenceModel, random_prompts

PROMPT_LENGTHS = [1, 3, 16, 17, 33, 64, 90]
SCENARIOS = {
    "defaults": engine_config(num_kv_blocks=256, num_threads=1),
    "chunked-prefill-preemption": engine_config(
        block_size=4, num_kv_blocks=40, max_num_batched_tokens=7, num_threads=1
    ),
}


def greedy_tokens(
    engine: LLMEngine, prompts: list[list[int]], structured: StructuredOutput | None = None
) -> list[list[int]]:
    """Every prompt's greedy continuation, all prompts batched together."""
    params = SamplingParams(max_tokens=20, temperature=0.0, structured=structured)
    outputs: dict[str, list[int]] = {str(i): [] for i in range(len(prompts))}
    for index, prompt in enumerate(prompts):
        engine.add_request(str(index), prompt, params)
    while engine.has_unfinished_requests():
        for output in engine.step():
            outputs[output.request_id].extend(output.new_token_ids)
    return [outputs[str(i)] for i in range(len(prompts))]


@pytest.fixture(scope="module")
def biased_tied_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Attention biases, tied embeddings and a vocabulary that two ranks cannot split evenly."""
    torch.manual_seed(3)
    shape = TINY_SHAPE | {"vocab_size": 251, "attention_bias": True, "tie_word_embeddings": True}
    folder = tmp_path_factory.mktemp("models") / "biased-tied"
    LlamaForCausalLM(LlamaConfig(**shape)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_two_ranks_give_the_greedy_tokens_of_one(tiny_llama: ReferenceModel, scenario: str) -> None:
    config = SCENARIOS[scenario]
    prompts = random_prompts(PROMPT_LENGTHS)
    with LLMEngine(tiny_llama.model_id, tiny_llama.path, config) as single:
        expected = greedy_tokens(single, prompts)

    sharded_config = replace(config, tensor_parallel_size=2)
    with LLMEngine(tiny_llama.model_id, tiny_llama.path, sharded_config) as sharded:
        assert sharded.runner.kv_caches.shape[2] == 1  # one of the two KV heads per rank
        got = greedy_tokens(sharded, prompts)
        stats = sharded.stats()

    assert got == expected
    assert stats.num_free_kv_blocks == stats.num_kv_blocks
    if scenario == "chunked-prefill-preemption":
        assert stats.num_preemptions > 0


def test_biases_tied_embeddings_and_an_uneven_vocabulary_shard(biased_tied_llama: Path) -> None:
    config = engine_config(num_kv_blocks=128, num_threads=1)
    prompts = [[token % 251 for token in prompt] for prompt in random_prompts([5, 40], seed=7)]
    with LLMEngine("biased", biased_tied_llama, config) as single:
        expected = greedy_tokens(single, prompts)
    with LLMEngine("biased", biased_tied_llama, replace(config, tensor_parallel_size=2)) as sharded:
        assert sharded.runner.model.vocab_part == 126  # 251 ids: 126 + 125 and one padding row
        assert greedy_tokens(sharded, prompts) == expected


def test_two_ranks_give_the_greedy_tokens_of_one_on_qwen3(tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = Qwen3ForCausalLM(Qwen3Config(**TINY_SHAPE, head_dim=24))
    for name, parameter in model.named_parameters():
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            torch.nn.init.normal_(parameter, mean=1.0, std=0.5)
    model.save_pretrained(tmp_path)
    config = engine_config(num_kv_blocks=128, num_threads=1)
    prompts = random_prompts([5, 33])
    with LLMEngine("qwen3", tmp_path, config) as single:
        expected = greedy_tokens(single, prompts)
    with LLMEngine("qwen3", tmp_path, replace(config, tensor_parallel_size=2)) as sharded:
        assert greedy_tokens(sharded, prompts) == expected


def test_two_ranks_keep_a_grammar(tiny_chat_model: Path) -> None:
    config = engine_config(num_kv_blocks=128, num_threads=1)
    tokenizer = load_tokenizer(tiny_chat_model)
    regex = StructuredOutput.regex("[a-z]{3,8}@[a-z]{2,5}\\.(com|org)")
    prompts = random_prompts([4, 30])
    with LLMEngine("tiny-chat", tiny_chat_model, config, tokenizer) as single:
        expected = greedy_tokens(single, prompts, regex)
    sharded_config = replace(config, tensor_parallel_size=2)
    with LLMEngine("tiny-chat", tiny_chat_model, sharded_config, tokenizer) as sharded:
        assert greedy_tokens(sharded, prompts, regex) == expected
    assert all(tokenizer.decode(tokens).count("@") == 1 for tokens in expected)


def test_two_int4_ranks_give_the_greedy_tokens_of_one(tiny_llama: ReferenceModel) -> None:
    config = engine_config(num_kv_blocks=256, num_threads=1, quantization="int4")
    prompts = random_prompts(PROMPT_LENGTHS[:4])
    with LLMEngine(tiny_llama.model_id, tiny_llama.path, config) as single:
        expected = greedy_tokens(single, prompts)
    sharded_config = replace(config, tensor_parallel_size=2)
    with LLMEngine(tiny_llama.model_id, tiny_llama.path, sharded_config) as sharded:
        assert sharded.runner.weight_bytes() < 0.2 * 4 * sum(
            p.numel() for p in tiny_llama.hf.parameters()
        )
        assert greedy_tokens(sharded, prompts) == expected


def test_groups_that_a_rank_would_split_are_refused(tiny_llama: ReferenceModel) -> None:
    # Each rank's o_proj has 64 / 2 = 32 columns: groups of 64 would straddle the ranks.
    config = engine_config(quantization="int4", quantization_group_size=64, tensor_parallel_size=2)

    with pytest.raises(IncompatibleSettings, match="group size 64 does not divide"):
        LLMEngine(tiny_llama.model_id, tiny_llama.path, config)


def test_heads_that_do_not_divide_are_refused_before_any_rank_starts(tmp_path: Path) -> None:
    config = dict(
        TINY_SHAPE,
        num_attention_heads=9,
        num_key_value_heads=3,
        hidden_size=72,
        intermediate_size=144,
    )
    (tmp_path / "config.json").write_text(
        json.dumps(config | {"architectures": ["LlamaForCausalLM"]})
    )

    with pytest.raises(
        ValueError,
        match=r"9 attention heads, 3 key/value heads; sizes that do: 1, 3",
    ):
        LLMEngine("nine-heads", tmp_path, engine_config(tensor_parallel_size=2))
    assert multiprocessing.active_children() == []


def test_a_dead_rank_fails_the_step_and_the_health_check(tiny_llama: ReferenceModel) -> None:
    config = engine_config(num_kv_blocks=64, num_threads=1, tensor_parallel_size=2)
    with LLMEngine(tiny_llama.model_id, tiny_llama.path, config) as engine:
        engine.add_request("r", random_prompts([8])[0], SamplingParams(max_tokens=50))
        assert engine.step()
        engine.check_health()
        (rank1,) = multiprocessing.active_children()
        rank1.kill()
        rank1.join()

        with pytest.raises(RankLost):
            engine.step()
        with pytest.raises(RankLost, match="rank 1 exited"):
            engine.check_health()


def test_a_step_input_survives_packing() -> None:
    step = StepInput(
        token_ids=[5, 6, 7, 8],
        positions=[9, 3, 0, 1],
        slots=[41, 19, 64, 65],
        sample_rows=[0, 1, 3],
        decode_context_lens=[10, 4],
        decode_tables=[[2, 5, 0], [4, 0, 0]],
        prefills=[PrefillInput(query_start=2, query_len=2, context_len=2, block_ids=[16])],
    )

    assert StepInput.unpack(step.pack()) == step
    with pytest.raises(ValueError, match="ends early"):
        StepInput.unpack(step.pack()[:-1])
