"""Integers packed into int32 words, as GPTQ, AWQ and compressed-tensors store them, and the
step from unsigned integers with zero points to Prism's quantized layout."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from prism.models.quantized import QuantizedMatrix, pack_int4

WORD_BITS = 32
INT8_MIDPOINT = 128


def unpack_int32(
    packed: torch.Tensor, bits: int, dim: int, field_of_value: Sequence[int] | None = None
) -> torch.Tensor:
    """Unsigned ``bits``-bit integers (int32) from int32 words packed along ``dim``.

    Word ``j`` holds values ``j * n .. j * n + n - 1`` (``n = 32 // bits``), value ``i`` in
    bit field ``i`` counted from the lowest bits, or in field ``field_of_value[i]`` where
    the format interleaves them (AWQ).
    """
    if WORD_BITS % bits:
        raise ValueError(f"{bits}-bit integers do not fill an int32 word")
    per_word = WORD_BITS // bits
    words = packed.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(per_word, dtype=torch.int64) * bits
    fields = (words.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    if field_of_value is not None:
        fields = fields[..., list(field_of_value)]
    dim = dim % packed.dim()
    return fields.movedim(-1, dim + 1).flatten(dim, dim + 1).to(torch.int32)


def matrix_from_unsigned(
    values: torch.Tensor,
    zeros: torch.Tensor,
    scales: torch.Tensor,
    bits: int,
    group_size: int,
    group_index: torch.Tensor | None = None,
) -> QuantizedMatrix:
    """Prism's layout of ``w = (values - zeros) * scales``, per group of columns.

    ``values`` are unsigned integers [rows, cols]; ``zeros`` and ``scales`` [rows, groups].
    ``group_index`` [cols] names each column's group where groups are not runs of
    consecutive columns (GPTQ's act-order): the columns are then sorted by group, and the
    matrix records that order for the activations.

    Where the group size does not divide the columns (GPTQ leaves the last group short),
    each group is cut into groups of ``gcd(group_size, cols)`` columns sharing its scale
    and zero, which gives the same weights.
    """
    cols = values.shape[1]
    input_order = _group_order(group_index, cols, group_size)
    if input_order is not None:
        values = values[:, input_order]
    even = math.gcd(group_size, cols)
    parts = group_size // even
    scales = scales.float().repeat_interleave(parts, 1)[:, : cols // even].contiguous()
    zeros = zeros.float().repeat_interleave(parts, 1)[:, : cols // even]
    group_size = even
    if bits == 4:
        offsets = (-zeros * scales).contiguous()
        return QuantizedMatrix(4, group_size, pack_int4(values), scales, offsets, input_order)
    if bits == 8:
        data = (values - INT8_MIDPOINT).to(torch.int8).contiguous()
        symmetric = bool((zeros == INT8_MIDPOINT).all())
        offsets = None if symmetric else ((INT8_MIDPOINT - zeros) * scales).contiguous()
        return QuantizedMatrix(8, group_size, data, scales, offsets, input_order)
    raise ValueError(f"Prism loads 4- and 8-bit checkpoints, not {bits}-bit ones")


def _group_order(
    group_index: torch.Tensor | None, cols: int, group_size: int
) -> torch.Tensor | None:
    """The column order that makes each group a run (None: it already is)."""
    runs = torch.arange(cols) // group_size
    if group_index is None or torch.equal(group_index.long(), runs):
        return None
    order = torch.argsort(group_index.long(), stable=True)
    if not torch.equal(group_index.long()[order], runs):
        raise ValueError(f"the checkpoint's groups do not each hold {group_size} columns")
    return order
