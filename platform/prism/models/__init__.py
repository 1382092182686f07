"""Model sources, configs, weights and tokenizers for the Prism engine."""

from __future__ import annotations

from prism.models.gguf import convert_gguf
from prism.models.model_config import ModelConfig
from prism.models.registry import DEFAULT_MODEL_ID, ResolvedModel, cache_dir, resolve_model
from prism.models.tokenizer import apply_chat_template, load_tokenizer
from prism.models.weights import Checkpoint, Shard

__all__ = [
    "DEFAULT_MODEL_ID",
    "Checkpoint",
    "ModelConfig",
    "ResolvedModel",
    "Shard",
    "apply_chat_template",
    "cache_dir",
    "convert_gguf",
    "load_tokenizer",
    "resolve_model",
]
