"""``quantization: gguf`` serves a GGUF model's own blocks: the same weights transformers
dequantizes from the file, on Prism's quantized kernel."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel

from prism.engine import LLMEngine
from prism.errors import IncompatibleSettings
from prism.models import Checkpoint, ResolvedModel
from prism.models.prequantized.gguf import GGUFFormat
from prism.models.quantized import QuantizedMatrix
from support.engines import engine_config, run_staggered
from support.gguf_files import VOCAB, convert_like_prism, write_tiny_gguf
from support.models import ReferenceModel
from support.parity import assert_batch_parity

MAX_NEW_TOKENS = 12
LINEARS = [f"self_attn.{n}_proj" for n in "qkvo"] + [
    f"mlp.{n}_proj" for n in ("gate", "up", "down")
]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PreTrainedModel]:
    """A converted folder of a tiny mixed-block-type GGUF, and transformers' model of it."""
    root = tmp_path_factory.mktemp("gguf")
    gguf_path = write_tiny_gguf(root / "tiny.gguf")
    folder = root / "tiny"
    return folder, convert_like_prism(gguf_path, folder)


def _prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(3)
    shared = torch.randint(0, VOCAB, (20,), generator=generator).tolist()
    prompts = [torch.randint(0, VOCAB, (n,), generator=generator).tolist() for n in (1, 7, 33)]
    # The first and the last share a cached block: the last arrives steps after the first.
    return [[*shared, 5], *prompts, [*shared, 9, 11]]


def _prefixes(hf: PreTrainedModel) -> list[str]:
    layers = range(hf.config.num_hidden_layers)
    projections = [f"model.layers.{i}.{name}" for i in layers for name in LINEARS]
    return ["model.embed_tokens", "lm_head", *projections]


def test_every_matrix_repacks_to_the_weights_transformers_reads(
    tiny_gguf: tuple[Path, PreTrainedModel],
) -> None:
    folder, hf = tiny_gguf
    source = GGUFFormat.open(folder)
    weights = hf.state_dict()
    with Checkpoint(folder) as checkpoint:
        for prefix in _prefixes(hf):
            matrix = source.read(checkpoint, prefix)
            assert isinstance(matrix, QuantizedMatrix), prefix
            torch.testing.assert_close(
                matrix.dequantize(), weights[f"{prefix}.weight"], rtol=0, atol=0, msg=prefix
            )


@pytest.mark.parametrize(
    "scenario",
    [{"num_kv_blocks": 128}, {"block_size": 4, "num_kv_blocks": 256, "max_num_batched_tokens": 7}],
    ids=["defaults", "chunked-prefill"],
)
def test_gguf_blocks_generate_what_transformers_generates_from_the_file(
    tiny_gguf: tuple[Path, PreTrainedModel], scenario: dict[str, int]
) -> None:
    folder, hf = tiny_gguf
    prompts = _prompts()
    with LLMEngine("tiny-gguf", folder, engine_config(quantization="gguf", **scenario)) as engine:
        outputs = run_staggered(engine, prompts, MAX_NEW_TOKENS)
        stats = engine.stats()

    assert_batch_parity(hf, prompts, outputs, MAX_NEW_TOKENS)
    assert stats.prefix_cache_hits > 0
    assert stats.num_free_kv_blocks == stats.num_kv_blocks


def test_two_ranks_serve_the_gguf_blocks_as_one_does(
    tiny_gguf: tuple[Path, PreTrainedModel],
) -> None:
    folder, _ = tiny_gguf
    config = engine_config(quantization="gguf", num_kv_blocks=128, num_threads=1)
    prompts = _prompts()
    with LLMEngine("tiny-gguf", folder, config) as single:
        expected = run_staggered(single, prompts, MAX_NEW_TOKENS)
        single_bytes = single.runner.weight_bytes()
    with LLMEngine("tiny-gguf", folder, replace(config, tensor_parallel_size=2)) as sharded:
        assert run_staggered(sharded, prompts, MAX_NEW_TOKENS) == expected
        assert sharded.runner.model.weight_bytes() < 0.6 * single_bytes  # this rank's part


def test_the_embedded_model_serves_its_own_blocks(smollm2: ReferenceModel) -> None:
    with LLMEngine(
        smollm2.model_id, smollm2.path, engine_config(quantization="gguf", num_kv_blocks=64)
    ) as engine:
        quantized_bytes = engine.runner.weight_bytes()
        source = GGUFFormat.open(smollm2.path)
        with Checkpoint(smollm2.path) as checkpoint:
            prefix = "model.layers.29.self_attn.k_proj"  # q/k rows come back unpermuted
            matrix = source.read(checkpoint, prefix)
            assert matrix is not None
            torch.testing.assert_close(
                matrix.dequantize(), checkpoint.read(f"{prefix}.weight", torch.float32)
            )
    full_bytes = sum(p.numel() * p.element_size() for p in smollm2.hf.parameters())
    assert quantized_bytes < 0.25 * full_bytes


def test_gguf_mode_needs_a_model_converted_from_gguf(tiny_llama: ReferenceModel) -> None:
    with pytest.raises(IncompatibleSettings, match="not converted from a GGUF file"):
        LLMEngine(tiny_llama.model_id, tiny_llama.path, engine_config(quantization="gguf"))


def test_a_converted_folder_links_its_gguf_source(smollm2_files: ResolvedModel) -> None:
    assert GGUFFormat.open(smollm2_files.path).path.name.endswith(".gguf")
