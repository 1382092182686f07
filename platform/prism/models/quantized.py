"""Prism's weight-only quantized matrix layout, and round-to-nearest quantization into it.

A quantized matrix of ``rows`` x ``cols`` stores one small integer per weight and, per group
of ``group_size`` consecutive columns of a row, a scale and (optionally) an offset::

    weight[r, c] = q[r, c] * scales[r, c // group_size] + offsets[r, c // group_size]

- ``bits=8``: ``q`` is int8 (-128..127), one byte per weight, ``data`` is [rows, cols].
- ``bits=4``: ``q`` is 0..15, two per byte, ``data`` is uint8 [rows, cols // 2]. Within each
  run of 32 columns, byte ``j`` holds column ``j`` in its low nibble and column ``j + 16`` in
  its high nibble (the order GGML's Q4_0 uses), so 16 bytes unpack into 32 weights in order
  with one mask and one shift.

Scales and offsets are fp32 [rows, cols // group_size]; ``offsets`` is None for symmetric
quantization. ``input_order`` (int64 [cols], or None) is set where a checkpoint's groups are
not runs of consecutive columns (GPTQ's act-order): the columns are stored sorted by group,
and a product reads the activations' columns in that order, ``x[:, input_order] @ W.T``.
Every pre-quantized format Prism loads (GGUF blocks, GPTQ, AWQ,
compressed-tensors) is repacked into this layout, and every kernel reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch

QuantizationMode = Literal["none", "int8", "int4", "gguf"]
QUANTIZATION_MODES: tuple[QuantizationMode, ...] = ("none", "int8", "int4", "gguf")
"""``gguf`` serves a GGUF model's stored blocks (:mod:`prism.models.prequantized.gguf`);
the others are round-to-nearest at load, or none."""

NIBBLE_RUN = 32
"""Columns of a 4-bit matrix packed together: byte j holds columns j and j + 16."""

INT8_MAX = 127
INT4_LEVELS = 15
DEFAULT_GROUP_SIZE = {8: None, 4: 32}
"""Columns per scale when none is asked for: int8 a whole row, int4 32 (see
docs/quantization.md for the measurements behind it)."""


@dataclass(frozen=True, slots=True)
class QuantizedMatrix:
    """A weight matrix in Prism's quantized layout (see the module's note)."""

    bits: int
    group_size: int
    data: torch.Tensor
    scales: torch.Tensor
    offsets: torch.Tensor | None
    input_order: torch.Tensor | None = None

    def __post_init__(self) -> None:
        rows, cols = self.shape
        if self.bits not in (4, 8):
            raise ValueError(f"quantized matrices have 4 or 8 bits, not {self.bits}")
        if self.group_size < 1 or cols % self.group_size:
            raise ValueError(f"group size {self.group_size} does not divide {cols} columns")
        if self.bits == 4 and (cols % NIBBLE_RUN or self.group_size % NIBBLE_RUN):
            raise ValueError(f"4-bit columns and groups must be multiples of {NIBBLE_RUN}")
        groups = (rows, cols // self.group_size)
        for name, tensor in (("scales", self.scales), ("offsets", self.offsets)):
            if tensor is not None and (
                tuple(tensor.shape) != groups or tensor.dtype != torch.float32
            ):
                raise ValueError(
                    f"{name} must be float32 {list(groups)}, "
                    f"not {tensor.dtype} {list(tensor.shape)}"
                )
        if self.input_order is not None and tuple(self.input_order.shape) != (cols,):
            raise ValueError(f"input_order must list {cols} columns")

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the full-precision matrix."""
        rows, width = self.data.shape
        return rows, width * 2 if self.bits == 4 else width

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def nbytes(self) -> int:
        """Bytes held: the integers, the scales and the offsets."""
        tensors = (self.data, self.scales, self.offsets, self.input_order)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def integers(self) -> torch.Tensor:
        """``q`` as int32 [rows, cols] (4-bit values unpacked)."""
        if self.bits == 8:
            return self.data.to(torch.int32)
        rows, cols = self.shape
        runs = self.data.view(rows, cols // NIBBLE_RUN, NIBBLE_RUN // 2).to(torch.int32)
        return torch.cat([runs & 0xF, runs >> 4], dim=-1).reshape(rows, cols)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The full-precision matrix [rows, cols] in ``dtype``, columns in stored order."""
        rows, cols = self.shape
        grouped = self.integers().view(rows, -1, self.group_size).float()
        grouped = grouped * self.scales[..., None]
        if self.offsets is not None:
            grouped = grouped + self.offsets[..., None]
        return grouped.reshape(rows, cols).to(dtype)

    def take_rows(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Rows ``ids`` dequantized, [len(ids), cols] (an embedding lookup)."""
        return self.select_rows(ids).dequantize(dtype)

    def select_rows(self, ids: torch.Tensor) -> QuantizedMatrix:
        """Rows ``ids``, in that order, still quantized."""
        offsets = None if self.offsets is None else self.offsets[ids].contiguous()
        return replace(
            self,
            data=self.data[ids].contiguous(),
            scales=self.scales[ids].contiguous(),
            offsets=offsets,
        )

    def row_span(self, start: int, stop: int, rows: int) -> QuantizedMatrix:
        """Rows ``start:stop``, padded with zero rows (weights 0) up to ``rows``."""
        missing = rows - (stop - start)

        def part(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor[start:stop]
            pad = tensor.new_zeros((missing, *tensor.shape[1:]))
            return torch.cat([tensor, pad]) if missing else tensor.contiguous()

        offsets = None if self.offsets is None else part(self.offsets)
        return replace(self, data=part(self.data), scales=part(self.scales), offsets=offsets)

    def column_span(self, start: int, stop: int) -> QuantizedMatrix:
        """Columns ``start:stop``, which must begin and end on a group (and nibble run)."""
        step = self.group_size if self.bits == 8 else max(self.group_size, NIBBLE_RUN)
        if start % step or stop % step:
            raise ValueError(f"columns {start}:{stop} split a group of {self.group_size} columns")
        if self.input_order is not None:
            raise ValueError("a matrix stored in act-order cannot be split by columns")
        per_byte = 2 if self.bits == 4 else 1
        groups = slice(start // self.group_size, stop // self.group_size)
        offsets = None if self.offsets is None else self.offsets[:, groups].contiguous()
        return replace(
            self,
            data=self.data[:, start // per_byte : stop // per_byte].contiguous(),
            scales=self.scales[:, groups].contiguous(),
            offsets=offsets,
        )


def stack_rows(matrices: list[QuantizedMatrix]) -> QuantizedMatrix:
    """The matrices one above the other (a fused projection), in one common layout.

    Matrices of different widths of integer or group size are brought to the widest
    integers and the smallest group first, which is exact: 4-bit values fit 8 bits, and a
    group's scale repeated over its parts gives the same weights.
    """
    first = matrices[0]
    if len(matrices) == 1:
        return first
    order = first.input_order
    if not all(_same_order(m.input_order, order) for m in matrices):
        raise ValueError("fused matrices must share one column order")
    bits = max(m.bits for m in matrices)
    group_size = math.gcd(*(m.group_size for m in matrices))
    if bits == 4 and group_size % NIBBLE_RUN:
        bits = 8
    common = [_relaid(m, bits, group_size) for m in matrices]
    symmetric = all(m.offsets is None for m in common)
    return QuantizedMatrix(
        bits,
        group_size,
        torch.cat([m.data for m in common]),
        torch.cat([m.scales for m in common]),
        None if symmetric else torch.cat([_offsets(m) for m in common]),
        order,
    )


def _same_order(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return torch.equal(a, b)


def _relaid(matrix: QuantizedMatrix, bits: int, group_size: int) -> QuantizedMatrix:
    data = matrix.data
    if matrix.bits != bits:
        data = matrix.integers().to(torch.int8)
    repeat = matrix.group_size // group_size
    offsets = None if matrix.offsets is None else matrix.offsets.repeat_interleave(repeat, 1)
    scales = matrix.scales.repeat_interleave(repeat, 1)
    return QuantizedMatrix(bits, group_size, data, scales, offsets, matrix.input_order)


def _offsets(matrix: QuantizedMatrix) -> torch.Tensor:
    return torch.zeros_like(matrix.scales) if matrix.offsets is None else matrix.offsets


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Integers 0..15 [rows, cols] packed two per byte in Prism's 4-bit order."""
    rows, cols = values.shape
    if cols % NIBBLE_RUN:
        raise ValueError(f"4-bit columns must be a multiple of {NIBBLE_RUN}, not {cols}")
    runs = values.to(torch.uint8).view(rows, cols // NIBBLE_RUN, NIBBLE_RUN)
    low, high = runs.split(NIBBLE_RUN // 2, dim=-1)
    return (low | (high << 4)).reshape(rows, cols // 2)


def quantize(weight: torch.Tensor, bits: int, group_size: int | None = None) -> QuantizedMatrix:
    """Round-to-nearest quantization of a [rows, cols] matrix, per group of columns.

    8 bits are symmetric (scale = max |w| / 127, no offset); 4 bits are asymmetric (the
    group's minimum is the offset, its range spread over 16 levels), which keeps more of a
    small group's precision. ``group_size`` None is one group per row.
    """
    rows, cols = weight.shape
    group_size = group_size or cols
    if cols % group_size:
        raise ValueError(f"group size {group_size} does not divide {cols} columns")
    grouped = weight.detach().float().reshape(rows, cols // group_size, group_size)
    if bits == 8:
        scales = grouped.abs().amax(dim=-1) / INT8_MAX
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        q = (grouped / scales[..., None]).round().clamp_(-INT8_MAX, INT8_MAX)
        data = q.reshape(rows, cols).to(torch.int8)
        return QuantizedMatrix(8, group_size, data.contiguous(), scales.contiguous(), None)
    if bits == 4:
        low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
        scales = (high - low) / INT4_LEVELS
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        q = ((grouped - low[..., None]) / scales[..., None]).round().clamp_(0, INT4_LEVELS)
        data = pack_int4(q.reshape(rows, cols))
        return QuantizedMatrix(4, group_size, data, scales.contiguous(), low.contiguous())
    raise ValueError(f"quantization has 4 or 8 bits, not {bits}")


@dataclass(frozen=True, slots=True)
class QuantizationSpec:
    """How a full-precision checkpoint is quantized at load: bits and columns per scale."""

    bits: int
    group_size: int | None = None

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"quantization has 4 or 8 bits, not {self.bits}")
        if self.bits == 4 and (self.group_size is None or self.group_size % NIBBLE_RUN):
            raise ValueError(f"int4 groups must be a multiple of {NIBBLE_RUN} columns")

    @classmethod
    def for_mode(cls, mode: str, group_size: int | None = None) -> QuantizationSpec | None:
        """The spec of a ``quantization`` setting (None where nothing is quantized at load:
        ``none``, or ``gguf``, whose blocks are stored quantized)."""
        if mode not in QUANTIZATION_MODES:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATION_MODES)}")
        if mode in ("none", "gguf"):
            return None
        bits = 8 if mode == "int8" else 4
        return cls(bits, group_size or DEFAULT_GROUP_SIZE[bits])

    def quantize(self, weight: torch.Tensor) -> QuantizedMatrix:
        return quantize(weight, self.bits, self.group_size)
