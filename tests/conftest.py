"""Shared fixtures: a tiny random Llama (fast) and the embedded SmolLM2 (real weights)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from prism.engine import cpu_kernels
from prism.models import ResolvedModel, load_tokenizer, resolve_model
from support.models import TINY_SHAPE, ReferenceModel, save_tiny_chat_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


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
def tiny_chat_model(smollm2_files: ResolvedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer: cheap enough for several replicas."""
    folder = tmp_path_factory.mktemp("models") / "tiny-chat"
    return save_tiny_chat_model(folder, smollm2_files.path)


@pytest.fixture(scope="session")
def smollm2(smollm2_files: ResolvedModel) -> ReferenceModel:
    hf = AutoModelForCausalLM.from_pretrained(smollm2_files.path, dtype=torch.float32).eval()
    return ReferenceModel(smollm2_files.model_id, smollm2_files.path, hf)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_files: ResolvedModel):
    return load_tokenizer(smollm2_files.path)


@pytest.fixture
def torch_path_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Native kernels switched off (``PRISM_NATIVE_KERNELS=0``) for the test's duration."""
    monkeypatch.setenv(cpu_kernels.DISABLE_ENV, "0")
    cpu_kernels.native_kernels.cache_clear()
    yield
    monkeypatch.undo()
    cpu_kernels.native_kernels.cache_clear()
