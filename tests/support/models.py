"""Tiny model shapes, random prompts and the HF reference model record."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

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


def save_tiny_chat_model(folder: Path, tokenizer_source: Path) -> Path:
    """A tiny random Llama sized for ``tokenizer_source``'s tokenizer, saved with it.

    Fast enough to run several replicas on a small machine, with a real tokenizer and chat
    template so it can sit behind the OpenAI API.
    """
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
    vocab_size = json.loads((tokenizer_source / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    shape = TINY_SHAPE | {"vocab_size": vocab_size, "max_position_embeddings": 4096}
    LlamaForCausalLM(LlamaConfig(**shape)).save_pretrained(folder)
    for name in tokenizer_files:
        if (tokenizer_source / name).is_file():
            shutil.copy(tokenizer_source / name, folder / name)
    return folder
