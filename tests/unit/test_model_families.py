"""Greedy parity with HF (fp32) for the mixture-of-experts families and Gemma 3."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    MixtralConfig,
    MixtralForCausalLM,
    PreTrainedModel,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from prism.engine import LLMEngine
from prism.models import ModelConfig
from support.engines import engine_config, run_staggered
from support.models import TINY_SHAPE, ReferenceModel, random_prompts
from support.parity import assert_batch_parity

SHAPE = TINY_SHAPE | {"bos_token_id": None, "eos_token_id": None}
EXPERTS = {"num_experts_per_tok": 2, "moe_intermediate_size": 32}


def _qwen2_moe() -> PreTrainedModel:
    """Shared expert, and a dense first layer (mlp_only_layers)."""
    config = Qwen2MoeConfig(
        **SHAPE, **EXPERTS, num_experts=6, shared_expert_intermediate_size=48, mlp_only_layers=[0]
    )
    return Qwen2MoeForCausalLM(config)


def _qwen3_moe() -> PreTrainedModel:
    """Renormalised top-k weights, q/k head norms, every layer sparse."""
    config = Qwen3MoeConfig(**SHAPE, **EXPERTS, num_experts=8, norm_topk_prob=True, head_dim=24)
    return Qwen3MoeForCausalLM(config)


def _mixtral() -> PreTrainedModel:
    return MixtralForCausalLM(MixtralConfig(**SHAPE, num_local_experts=4, num_experts_per_tok=2))


def _gemma3() -> PreTrainedModel:
    """Local layers with a RoPE theta far from the global one's, and a query scalar that is
    not the head size, so dropping either changes the output."""
    config = Gemma3TextConfig(
        **(SHAPE | {"num_hidden_layers": 3}),
        head_dim=16,
        query_pre_attn_scalar=24,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        sliding_window=12,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
            "full_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    )
    return Gemma3ForCausalLM(config)


FAMILIES = {
    "qwen2-moe": _qwen2_moe,
    "qwen3-moe": _qwen3_moe,
    "mixtral": _mixtral,
    "gemma3": _gemma3,
}


def _randomize(model: PreTrainedModel) -> PreTrainedModel:
    """Norm weights away from their initial values (Gemma's are zeros, scaling by 1 + w), so
    a norm read with the wrong convention shows in the output."""
    for name, parameter in model.named_parameters():
        if "norm" in name:
            torch.nn.init.normal_(parameter, mean=0.5, std=0.3)
    return model.eval()


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(11)
    model = _randomize(FAMILIES[request.param]())
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return ReferenceModel(request.param, folder, model)


def test_greedy_matches_hf_over_chunked_prefill_and_prefix_hits(family: ReferenceModel) -> None:
    # 7-token chunks split the longer prompts over several steps; the repeated prompt
    # arrives after its first copy was prefilled and reuses its cached blocks.
    config = engine_config(block_size=4, num_kv_blocks=256, max_num_batched_tokens=7)
    engine = LLMEngine(family.model_id, family.path, config)
    prompts = random_prompts([3, 17, 70, 41, 120])
    prompts.append(prompts[2])

    outputs = run_staggered(engine, prompts, 16)

    assert_batch_parity(family.hf, prompts, outputs, 16)
    stats = engine.stats()
    assert stats.prefix_cache_hits > 0
    assert stats.num_free_kv_blocks == stats.num_kv_blocks


def test_expert_layers_are_read_from_the_config(family: ReferenceModel) -> None:
    config = ModelConfig.from_folder(family.path)
    mixture = config.mixture
    if family.model_id == "gemma3":
        assert mixture is None
        assert config.gemma and config.layer_windows == (12, None, 12)
        assert config.local_rope_theta == 100.0 and config.rope_theta == 10_000.0
        return
    assert mixture is not None
    assert mixture.sparse_layers == (
        (False, True) if family.model_id == "qwen2-moe" else (True,) * 2
    )
    assert mixture.shared_expert_size == (48 if family.model_id == "qwen2-moe" else 0)
    assert mixture.normalize_weights == (family.model_id != "qwen2-moe")


@pytest.mark.parametrize("name", ["qwen2-moe", "gemma3"])
def test_two_ranks_give_the_greedy_tokens_of_one(name: str, tmp_path: Path) -> None:
    """Every rank holds a slice of every expert (Qwen2-MoE: shared expert too); Gemma's head
    norms and windowed layers are held whole."""
    torch.manual_seed(5)
    _randomize(FAMILIES[name]()).save_pretrained(tmp_path)
    config = engine_config(num_kv_blocks=128, num_threads=1)
    prompts = random_prompts([5, 33])
    with LLMEngine(name, tmp_path, config) as single:
        expected = run_staggered(single, prompts, 12)
    with LLMEngine(name, tmp_path, replace(config, tensor_parallel_size=2)) as sharded:
        assert run_staggered(sharded, prompts, 12) == expected
