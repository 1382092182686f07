"""GPTQ checkpoints (AutoGPTQ / GPTQModel / optimum layout) read into Prism's layout.

Per linear layer: ``qweight`` int32 [in / n, out] (n = 32 / bits values per word, packed
along the input dimension), ``qzeros`` int32 [groups, out / n] (packed along the output
dimension), ``scales`` [groups, out] and ``g_idx`` [in], the group of each input column.
``w = (q - zero) * scale``. The original ("gptq", v1) format stores each zero point minus
one; "gptq_v2" stores it as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prism.models.prequantized.packing import matrix_from_unsigned, unpack_int32
from prism.models.quantized import QuantizedMatrix
from prism.models.weights import Checkpoint

_SUPPORTED_BITS = (4, 8)


@dataclass(frozen=True, slots=True)
class GPTQFormat:
    """A GPTQ checkpoint's settings, from ``quantization_config``."""

    bits: int
    group_size: int | None
    zero_point_stored_minus_one: bool

    name = "gptq"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPTQFormat:
        bits = int(config.get("bits", 4))
        if bits not in _SUPPORTED_BITS:
            raise ValueError(f"GPTQ with {bits} bits is not supported: Prism loads 4 and 8")
        group_size = int(config.get("group_size", 128))
        version = config.get("checkpoint_format") or config.get("format") or "gptq"
        if version not in ("gptq", "gptq_v2"):
            raise ValueError(f"GPTQ checkpoint format {version!r} is not supported")
        return cls(bits, group_size if group_size > 0 else None, version == "gptq")

    def read(self, checkpoint: Checkpoint, prefix: str) -> QuantizedMatrix | None:
        """The linear layer ``prefix`` (e.g. ``model.layers.0.mlp.down_proj``), if quantized."""
        if f"{prefix}.qweight" not in checkpoint:
            return None
        values = unpack_int32(_read(checkpoint, prefix, "qweight"), self.bits, dim=0).T
        zeros = unpack_int32(_read(checkpoint, prefix, "qzeros"), self.bits, dim=1).T
        if self.zero_point_stored_minus_one:
            zeros = zeros + 1
        scales = _read(checkpoint, prefix, "scales").T
        cols = values.shape[1]
        group_index = (
            _read(checkpoint, prefix, "g_idx") if f"{prefix}.g_idx" in checkpoint else None
        )
        zeros = zeros[: scales.shape[0]]  # the last packed word may pad the output rows
        return matrix_from_unsigned(
            values, zeros, scales, self.bits, self.group_size or cols, group_index
        )


def _read(checkpoint: Checkpoint, prefix: str, tensor: str) -> torch.Tensor:
    return checkpoint.read(f"{prefix}.{tensor}", torch.float32)
