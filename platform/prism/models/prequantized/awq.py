"""AWQ checkpoints in the GEMM layout (AutoAWQ, GPTQModel's AWQ) read into Prism's layout.

Per linear layer: ``qweight`` int32 [in, out / 8] and ``qzeros`` int32 [groups, out / 8],
both packed along the output dimension with AWQ's interleave (the word's bit fields hold
output columns 0, 2, 4, 6, 1, 3, 5, 7), and ``scales`` [groups, out].
``w = (q - zero) * scale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prism.models.prequantized.packing import matrix_from_unsigned, unpack_int32
from prism.models.quantized import QuantizedMatrix
from prism.models.weights import Checkpoint

AWQ_BITS = 4
AWQ_FIELD_OF_VALUE = (0, 4, 1, 5, 2, 6, 3, 7)
"""The bit field holding each of a word's 8 consecutive output columns."""


@dataclass(frozen=True, slots=True)
class AWQFormat:
    """An AWQ checkpoint's settings, from ``quantization_config``."""

    group_size: int | None

    name = "awq"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AWQFormat:
        bits = int(config.get("bits", config.get("w_bit", AWQ_BITS)))
        version = str(config.get("version") or config.get("format") or "gemm").lower()
        if bits != AWQ_BITS or version != "gemm":
            raise ValueError(
                f"AWQ {bits}-bit {version!r} is not supported: Prism loads 4-bit GEMM checkpoints"
            )
        if not config.get("zero_point", True):
            raise ValueError("AWQ without zero points is not supported")
        group_size = int(config.get("group_size", config.get("q_group_size", 128)))
        return cls(group_size if group_size > 0 else None)

    def read(self, checkpoint: Checkpoint, prefix: str) -> QuantizedMatrix | None:
        """The linear layer ``prefix`` (e.g. ``model.layers.0.mlp.down_proj``), if quantized."""
        if f"{prefix}.qweight" not in checkpoint:
            return None
        values = self._unpack(checkpoint, f"{prefix}.qweight").T
        zeros = self._unpack(checkpoint, f"{prefix}.qzeros").T
        scales = checkpoint.read(f"{prefix}.scales", torch.float32).T
        cols = values.shape[1]
        return matrix_from_unsigned(values, zeros, scales, AWQ_BITS, self.group_size or cols)

    @staticmethod
    def _unpack(checkpoint: Checkpoint, name: str) -> torch.Tensor:
        packed = checkpoint.read(name, torch.float32)
        return unpack_int32(packed, AWQ_BITS, dim=1, field_of_value=AWQ_FIELD_OF_VALUE)
