"""GGUF blocks and tiny GGUF models written with the gguf package, for the loader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, quants
from transformers import PreTrainedModel

from prism.models.gguf import dequantized_model
from prism.models.prequantized.gguf import GGUF_SOURCE_LINK

Q = GGMLQuantizationType

QUANTIZABLE = (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1)
"""Types gguf's Python package can quantize."""

FLOAT_FIELDS: dict[GGMLQuantizationType, tuple[tuple[int, type[np.floating]], ...]] = {
    Q.Q4_K: ((0, np.float16), (2, np.float16)),
    Q.Q5_K: ((0, np.float16), (2, np.float16)),
    Q.Q6_K: ((208, np.float16),),
    Q.Q8_K: ((0, np.float32),),
}
"""Float fields (byte offset, type) of the blocks gguf cannot produce, built here instead."""

TINY_GGUF_TYPES = {
    "attn_q": Q.Q4_K,
    "attn_k": Q.Q6_K,
    "attn_v": Q.Q8_0,
    "attn_output": Q.Q4_0,
    "ffn_gate": Q.Q4_1,
    "ffn_up": Q.Q5_K,
    "ffn_down": Q.Q6_K,
}
"""A block type per layer matrix, so one tiny model serves every repackable family, and
its fused q/k/v mixes 4-bit groups of 32 with 8-bit groups of 16 and 32."""
HIDDEN, INTERMEDIATE, VOCAB, LAYERS, HEADS, KV_HEADS = 256, 512, 256, 2, 4, 2


def random_blocks(
    qtype: GGMLQuantizationType,
    rows: int,
    cols: int,
    seed: int,
    weight_std: float = 1.0,
    field_std: float = 0.02,
) -> np.ndarray:
    """[rows, row_bytes] of ``qtype``: gguf's quantization of normal weights (std
    ``weight_std``) where gguf can quantize ``qtype``, else random bytes with small finite
    float fields (std ``field_std``)."""
    rng = np.random.default_rng(seed)
    if qtype in QUANTIZABLE:
        weights = rng.normal(0, weight_std, (rows, cols)).astype(np.float32)
        return quants.quantize(weights, qtype)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (rows, cols // block_size, type_size), dtype=np.uint8)
    for start, dtype in FLOAT_FIELDS[qtype]:
        field = rng.normal(0, field_std, (*blocks.shape[:2], 1)).astype(dtype).view(np.uint8)
        blocks[..., start : start + field.shape[-1]] = field
    return blocks.reshape(rows, -1)


def write_tiny_gguf(path: Path) -> Path:
    """A 2-layer random Llama GGUF (no tokenizer) with a block type per matrix
    (:data:`TINY_GGUF_TYPES`), a Q8_0 embedding and an untied Q6_K LM head."""
    head_dim = HIDDEN // HEADS
    shapes = {
        "attn_q": (HIDDEN, HIDDEN),
        "attn_k": (KV_HEADS * head_dim, HIDDEN),
        "attn_v": (KV_HEADS * head_dim, HIDDEN),
        "attn_output": (HIDDEN, HIDDEN),
        "ffn_gate": (INTERMEDIATE, HIDDEN),
        "ffn_up": (INTERMEDIATE, HIDDEN),
        "ffn_down": (HIDDEN, INTERMEDIATE),
    }
    writer = GGUFWriter(path, "llama")
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10_000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(VOCAB)
    seeds = iter(range(1000))

    def add(name: str, qtype: GGMLQuantizationType, rows: int, cols: int) -> None:
        # Weights of about 0.05; K-quant fields multiply up to 63 * 15 (Q4_K) or 63 * 32.
        raw = random_blocks(qtype, rows, cols, next(seeds), weight_std=0.05, field_std=1e-4)
        writer.add_tensor(name, raw, raw_dtype=qtype)

    add("token_embd.weight", Q.Q8_0, VOCAB, HIDDEN)
    add("output.weight", Q.Q6_K, VOCAB, HIDDEN)
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    for layer in range(LAYERS):
        for name, qtype in TINY_GGUF_TYPES.items():
            add(f"blk.{layer}.{name}.weight", qtype, *shapes[name])
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{layer}.{norm}.weight", np.ones(HIDDEN, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def convert_like_prism(gguf_path: Path, folder: Path) -> PreTrainedModel:
    """transformers' fp32 model of ``gguf_path``, saved in ``folder`` with the link to its
    GGUF source that Prism's conversion leaves (the tokenizer-free part of it)."""
    model = dequantized_model(gguf_path)
    model.save_pretrained(folder)
    (folder / GGUF_SOURCE_LINK).symlink_to(gguf_path.resolve())
    return model
