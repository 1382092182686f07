"""Checkpoints written by GPTQ (gptqmodel), AWQ (AutoAWQ) and compressed-tensors
(llm-compressor) load quantized, and match each tool's own dequantization of them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from prism.engine import LLMEngine, SamplingParams
from prism.models import Checkpoint, apply_chat_template, load_tokenizer
from prism.models.prequantized import checkpoint_quantization
from prism.models.quantized import QuantizedMatrix
from support.engines import engine_config, generate_alone, run_staggered
from support.models import ReferenceModel
from support.parity import assert_batch_parity, assert_greedy_parity
from support.quantized_checkpoints import save_quantizable_tiny_model, write_quantized

VARIANTS = {
    "gptq-sym": "gptq",
    "gptq-asym": "gptq",
    "gptq-sym-act": "gptq",
    "gptq-asym-act": "gptq",
    "awq-gemm": "awq",
    "ct-w4a16": "compressed-tensors",
    "ct-w4a16-asym": "compressed-tensors",
    "ct-w8a16": "compressed-tensors",
}
LINEARS = [f"self_attn.{n}_proj" for n in "qkvo"] + [
    f"mlp.{n}_proj" for n in ("gate", "up", "down")
]
MAX_NEW_TOKENS = 12
SMOLLM2_GROUP = 64
"""llm-compressor's default group of 128 does not divide SmolLM2's 576 columns."""


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Every variant of a tiny Llama, written by its tool, with the tool's dequantization."""
    root = tmp_path_factory.mktemp("prequantized")
    source = save_quantizable_tiny_model(root / "source")
    return write_quantized(source, root, list(VARIANTS))


def _loaded(folder: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _in_checkpoint_order(matrix: QuantizedMatrix) -> torch.Tensor:
    """The dequantized matrix with its columns back in the checkpoint's order."""
    weight = matrix.dequantize()
    if matrix.input_order is None:
        return weight
    unsorted = torch.empty_like(weight)
    unsorted[:, matrix.input_order] = weight
    return unsorted


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_layer_matches_the_tools_own_dequantization(
    tiny_checkpoints: dict[str, tuple[Path, Path]], variant: str
) -> None:
    checkpoint_folder, reference_folder = tiny_checkpoints[variant]
    stored = checkpoint_quantization(checkpoint_folder)
    assert stored is not None and stored.name == VARIANTS[variant]
    with Checkpoint(checkpoint_folder) as checkpoint, Checkpoint(reference_folder) as reference:
        for layer in range(2):
            for linear in LINEARS:
                prefix = f"model.layers.{layer}.{linear}"
                matrix = stored.read(checkpoint, prefix)
                assert matrix is not None, prefix
                assert (matrix.input_order is not None) == variant.endswith("-act"), prefix
                expected = reference.read(f"{prefix}.weight", torch.float32)
                torch.testing.assert_close(_in_checkpoint_order(matrix), expected, msg=prefix)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_engine_generates_what_transformers_generates_from_the_dequantized_weights(
    tiny_checkpoints: dict[str, tuple[Path, Path]], variant: str
) -> None:
    checkpoint_folder, reference_folder = tiny_checkpoints[variant]
    reference = _loaded(reference_folder)
    generator = torch.Generator().manual_seed(5)
    prompts = [torch.randint(4, 256, (n,), generator=generator).tolist() for n in (3, 17, 40)]
    config = engine_config(block_size=4, num_kv_blocks=256, max_num_batched_tokens=7)
    with LLMEngine(variant, checkpoint_folder, config) as engine:
        outputs = run_staggered(engine, prompts, MAX_NEW_TOKENS)
        stats = engine.stats()
        quantized_bytes = engine.runner.weight_bytes()

    assert_batch_parity(reference, prompts, outputs, MAX_NEW_TOKENS)
    assert stats.num_free_kv_blocks == stats.num_kv_blocks
    layers = sum(p.numel() * 4 for n, p in reference.named_parameters() if "layers" in n)
    embeddings = sum(p.numel() * 4 for n, p in reference.named_parameters() if "layers" not in n)
    ceiling = 0.35 if variant == "ct-w8a16" else 0.2
    assert quantized_bytes - embeddings < ceiling * layers  # the layers' matrices, quantized


def test_two_ranks_split_a_gptq_checkpoint_on_group_boundaries(
    tiny_checkpoints: dict[str, tuple[Path, Path]],
) -> None:
    folder, _ = tiny_checkpoints["gptq-asym"]
    config = engine_config(num_kv_blocks=128, num_threads=1)
    prompts = [[5, 9, 11], list(range(10, 40))]
    with LLMEngine("gptq", folder, config) as single:
        expected = run_staggered(single, prompts, MAX_NEW_TOKENS)
    with LLMEngine("gptq", folder, replace(config, tensor_parallel_size=2)) as sharded:
        assert run_staggered(sharded, prompts, MAX_NEW_TOKENS) == expected


def test_act_order_checkpoints_are_not_split_by_columns(
    tiny_checkpoints: dict[str, tuple[Path, Path]],
) -> None:
    folder, _ = tiny_checkpoints["gptq-sym-act"]
    config = engine_config(num_kv_blocks=128, num_threads=1, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="act-order cannot be split by columns"):
        LLMEngine("gptq-act", folder, config)


def test_smollm2_written_by_llm_compressor_answers_paris(
    smollm2: ReferenceModel, tmp_path: Path
) -> None:
    written = write_quantized(smollm2.path, tmp_path, ["ct-w4a16"], SMOLLM2_GROUP)
    checkpoint_folder, reference_folder = written["ct-w4a16"]
    tokenizer = load_tokenizer(checkpoint_folder)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = apply_chat_template(tokenizer, question)
    params = SamplingParams(max_tokens=MAX_NEW_TOKENS, temperature=0.0)
    with LLMEngine("smollm2-w4a16", checkpoint_folder, engine_config(num_kv_blocks=64)) as engine:
        tokens = generate_alone(engine, "paris", prompt, params)

    assert "Paris" in tokenizer.decode(tokens)
    assert_greedy_parity(_loaded(reference_folder), prompt, tokens, MAX_NEW_TOKENS)
