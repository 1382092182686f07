"""compressed-tensors checkpoints (llm-compressor's ``pack-quantized`` format) read into
Prism's layout.

Per quantized linear layer: ``weight_packed`` int32 [out, in / n] (n = 32 / bits values per
word, packed along the input dimension, the first in the lowest bits), ``weight_scale``
[out, groups] (one group for per-channel scales), ``weight_shape`` [out, in], and for
asymmetric schemes ``weight_zero_point`` int32 [out / n, groups] (packed along the output
dimension); ``weight_g_idx`` [in] with activation ordering. Integers are stored as
unsigned ``q + 2^(bits-1)``, so ``w = (stored - zero) * scale`` where ``zero`` is the
stored zero point, or ``2^(bits-1)`` for symmetric schemes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prism.models.prequantized.packing import WORD_BITS, matrix_from_unsigned, unpack_int32
from prism.models.quantized import QuantizedMatrix
from prism.models.weights import Checkpoint

PACKED_FORMAT = "pack-quantized"


@dataclass(frozen=True, slots=True)
class CompressedTensorsFormat:
    """A compressed-tensors checkpoint of weight-only integer schemes (W4A16, W8A16)."""

    group_size: int | None
    """The smallest group of any scheme (None: per-channel scales everywhere)."""

    name = "compressed-tensors"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CompressedTensorsFormat:
        groups = config.get("config_groups") or {}
        if not groups:
            raise ValueError("compressed-tensors config has no config_groups")
        sizes = [_check_scheme(name, scheme, config) for name, scheme in groups.items()]
        given = [size for size in sizes if size is not None]
        return cls(min(given) if given else None)

    def read(self, checkpoint: Checkpoint, prefix: str) -> QuantizedMatrix | None:
        """The linear layer ``prefix`` (e.g. ``model.layers.0.mlp.down_proj``), if quantized."""
        if f"{prefix}.weight_packed" not in checkpoint:
            return None
        packed = checkpoint.read(f"{prefix}.weight_packed", torch.float32)
        rows, cols = (int(n) for n in checkpoint.read(f"{prefix}.weight_shape", torch.float32))
        bits = WORD_BITS * packed.shape[1] // cols
        values = unpack_int32(packed, bits, dim=1)[:, :cols]
        scales = checkpoint.read(f"{prefix}.weight_scale", torch.float32)
        zero_name = f"{prefix}.weight_zero_point"
        if zero_name in checkpoint:
            zeros = unpack_int32(checkpoint.read(zero_name, torch.float32), bits, dim=0)[:rows]
        else:
            zeros = torch.full_like(scales, 1 << (bits - 1))
        order_name = f"{prefix}.weight_g_idx"
        group_index = (
            checkpoint.read(order_name, torch.float32) if order_name in checkpoint else None
        )
        group_size = cols // scales.shape[1]
        return matrix_from_unsigned(values, zeros, scales, bits, group_size, group_index)


def _check_scheme(name: str, scheme: dict[str, Any], config: dict[str, Any]) -> int | None:
    """Raise ValueError unless the scheme is one Prism runs; return its group size."""
    fmt = scheme.get("format") or config.get("format")
    weights = scheme.get("weights") or {}
    if fmt != PACKED_FORMAT:
        raise ValueError(
            f"compressed-tensors format {fmt!r} is not supported: Prism loads "
            f"{PACKED_FORMAT!r} weight-only schemes (W4A16, W8A16)"
        )
    if scheme.get("input_activations") or scheme.get("output_activations"):
        raise ValueError(f"scheme {name!r} quantizes activations: Prism quantizes weights only")
    if weights.get("type", "int") != "int" or weights.get("num_bits") not in (4, 8):
        raise ValueError(
            f"scheme {name!r} has {weights.get('num_bits')}-bit {weights.get('type')} "
            "weights: Prism loads 4- and 8-bit integers"
        )
    strategy = weights.get("strategy")
    if strategy == "group":
        return int(weights["group_size"])
    if strategy == "channel":
        return None
    raise ValueError(f"scheme {name!r}: the {strategy!r} strategy is not supported")
