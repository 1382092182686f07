"""A GGUF model's own quantized blocks, served as Prism quantized matrices.

A GGUF model is converted once into a full-precision Hugging Face folder (its tokenizer,
config and the small tensors come from there), which keeps a link to the GGUF file it came
from. With ``quantization: gguf`` the linear layers, the embedding and the LM head are read
from that file instead and repacked block for block (:mod:`prism.models.gguf_blocks`);
tensors stored unquantized (F32, F16, BF16), or in a block type Prism cannot repack, come
from the converted folder, dequantized by transformers.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import torch
from gguf import GGMLQuantizationType, GGUFReader, ReaderTensor

from prism.models.gguf_blocks import REPACKABLE_GGUF_TYPES, repack_gguf_tensor
from prism.models.quantized import NIBBLE_RUN, QuantizedMatrix
from prism.models.weights import Checkpoint

GGUF_SOURCE_LINK = "source.gguf"
"""The converted folder's link to the GGUF file it was converted from."""

_LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_MODEL_TENSORS = {"model.embed_tokens": "token_embd", "lm_head": "output"}
_LAYER_PREFIX = re.compile(r"model\.layers\.(\d+)\.(.+)")
PERMUTED_ARCHITECTURES = frozenset({"llama"})
"""GGUF architectures whose q and k rows llama.cpp's converter interleaves per head."""


class GGUFFormat:
    """The quantized tensors of the GGUF file a converted folder links to."""

    name = "gguf"
    group_size = NIBBLE_RUN
    """Columns a tensor-parallel split keeps whole: every repacked block type's groups
    divide 32 columns."""

    def __init__(self, gguf_path: Path, num_heads: int, num_kv_heads: int) -> None:
        self.path = gguf_path
        self._heads = {"attn_q": num_heads, "attn_k": num_kv_heads}

    @functools.cached_property
    def _file(self) -> tuple[dict[str, ReaderTensor], bool]:
        """The file's tensors by name, and whether its q/k rows are permuted. Read on first
        use: parsing a GGUF header (its whole vocabulary) takes seconds."""
        reader = GGUFReader(self.path)
        architecture = reader.get_field("general.architecture")
        permuted = architecture is not None and architecture.contents() in PERMUTED_ARCHITECTURES
        return {tensor.name: tensor for tensor in reader.tensors}, permuted

    @classmethod
    def open(cls, folder: Path) -> GGUFFormat:
        """The GGUF source of a converted folder; ValueError if it has none."""
        link = Path(folder) / GGUF_SOURCE_LINK
        if not link.exists():
            raise ValueError(
                f"quantization 'gguf' serves a GGUF model's own blocks, and {folder} was not "
                "converted from a GGUF file (or its source has moved): give the .gguf file as "
                "the model"
            )
        config = json.loads((Path(folder) / "config.json").read_text("utf-8"))
        heads = config["num_attention_heads"]
        return cls(link.resolve(), heads, config.get("num_key_value_heads") or heads)

    def read(self, checkpoint: Checkpoint, prefix: str) -> QuantizedMatrix | None:
        """The HF tensor ``prefix`` (e.g. ``model.layers.0.mlp.down_proj``) from its GGUF
        blocks, or None where the file stores it unquantized or in another block type."""
        tensors, permuted = self._file
        name = self._gguf_name(prefix)
        tensor = tensors.get(f"{name}.weight") if name else None
        if tensor is None or tensor.tensor_type not in REPACKABLE_GGUF_TYPES:
            return None
        cols, rows = (int(n) for n in tensor.shape)
        matrix = repack_gguf_tensor(
            tensor.data, GGMLQuantizationType(tensor.tensor_type), (rows, cols)
        )
        heads = self._heads.get(name.rsplit(".", 1)[-1]) if name else None
        if permuted and heads is not None:
            matrix = matrix.select_rows(_unpermuted_rows(rows, heads))
        return matrix

    @staticmethod
    def _gguf_name(prefix: str) -> str | None:
        if prefix in _MODEL_TENSORS:
            return _MODEL_TENSORS[prefix]
        match = _LAYER_PREFIX.fullmatch(prefix)
        if match is None or match.group(2) not in _LAYER_TENSORS:
            return None
        return f"blk.{match.group(1)}.{_LAYER_TENSORS[match.group(2)]}"


def _unpermuted_rows(rows: int, heads: int) -> torch.Tensor:
    """For each HF row, the GGUF row holding it: llama.cpp stores each head's rows
    interleaved (the two rotary halves alternating), HF stores them half after half."""
    return torch.arange(rows).view(heads, rows // heads // 2, 2).transpose(1, 2).reshape(-1)
