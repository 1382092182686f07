"""Shared fixtures: a tiny random Llama (fast) and the embedded SmolLM2 (real weights)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from prism.models import ResolvedModel, load_tokenizer, resolve_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_VOCAB = 256
TINY_SHAPE = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
"""A 2-layer decoder with grouped-query attention: builds in milliseconds."""
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500_000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
"""Llama 3 RoPE scaling with a short original context, so tiny prompts cross it."""


@dataclass(frozen=True)
class ReferenceModel:
    """A model folder for the engine plus the same weights in HF transformers (the oracle)."""

    model_id: str
    path: Path
    hf: LlamaForCausalLM


def random_prompts(lengths: list[int], seed: int = 1) -> list[list[int]]:
    """Prompts of random token ids of the tiny model's vocabulary, one per length."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, TINY_VOCAB, (n,), generator=generator).tolist() for n in lengths]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> ReferenceModel:
    """A 2-layer random Llama with grouped-query attention, saved as an HF folder."""
    torch.manual_seed(0)
    config = LlamaConfig(**TINY_SHAPE, bos_token_id=None, eos_token_id=None)
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    model.save_pretrained(path)
    return ReferenceModel("tiny-llama", path, model)


@pytest.fixture(scope="session")
def smollm2_files() -> ResolvedModel:
    """The embedded default model, converted once into the user's cache."""
    return resolve_model(None)


@pytest.fixture(scope="session")
def smollm2(smollm2_files: ResolvedModel) -> ReferenceModel:
    hf = AutoModelForCausalLM.from_pretrained(smollm2_files.path, dtype=torch.float32).eval()
    return ReferenceModel(smollm2_files.model_id, smollm2_files.path, hf)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_files: ResolvedModel):
    return load_tokenizer(smollm2_files.path)
