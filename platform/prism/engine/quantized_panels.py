"""Quantized matrices laid out for Prism's CPU product kernel, and the product itself.

:class:`PanelMatrix` holds the same integers, scales and offsets as a
:class:`QuantizedMatrix`, reordered once at load: output rows in panels of 16, and within a
panel the 16 weights of each input column together (4-bit: columns k and k + 1 share a
byte, k in the low nibble). The kernel (``kernels/quantized_matmul.cpp``) widens one panel at
a time into fp32 in cache and multiplies every activation row by it, so a decode step reads
each weight byte once. Rows are padded with zeros up to a whole panel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prism.engine.cpu_kernels import native_kernels
from prism.models.quantized import QuantizedMatrix

PANEL = 16
"""Output rows per panel."""


@dataclass(frozen=True, slots=True)
class PanelMatrix:
    """A quantized matrix in panels: ``data`` [panels, cols, 16] int8 or [panels, cols / 2,
    16] uint8; ``scales``/``offsets`` [panels, groups, 16] fp32."""

    bits: int
    group_size: int
    rows: int
    data: torch.Tensor
    scales: torch.Tensor
    offsets: torch.Tensor | None
    input_order: torch.Tensor | None = None
    """The activations' column order (see :class:`QuantizedMatrix`)."""

    @property
    def shape(self) -> tuple[int, int]:
        width = self.data.shape[1]
        return self.rows, width * 2 if self.bits == 4 else width

    @property
    def nbytes(self) -> int:
        """Bytes held: the integers, the scales and the offsets (padding included)."""
        tensors = (self.data, self.scales, self.offsets, self.input_order)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def take_rows(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Rows ``ids`` dequantized, [len(ids), cols] (an embedding lookup)."""
        panel, lane = ids // PANEL, ids % PANEL
        data = self.data[panel, :, lane]
        if self.bits == 4:
            data = torch.stack([data & 0xF, data >> 4], dim=-1).flatten(1)
        rows, cols = data.shape
        grouped = data.float().view(rows, -1, self.group_size)
        grouped = grouped * self.scales[panel, :, lane][..., None]
        if self.offsets is not None:
            grouped = grouped + self.offsets[panel, :, lane][..., None]
        return grouped.reshape(rows, cols).to(dtype)


def _panels(tensor: torch.Tensor) -> torch.Tensor:
    """[rows, width] zero-padded to whole panels, as [panels, width, 16]."""
    rows, width = tensor.shape
    padded = torch.zeros((-(-rows // PANEL) * PANEL, width), dtype=tensor.dtype)
    padded[:rows] = tensor
    return padded.view(-1, PANEL, width).transpose(1, 2).contiguous()


def supports_panels(matrix: QuantizedMatrix) -> bool:
    """Whether the CPU kernel runs this matrix (on CPU, with the kernels built)."""
    return matrix.device.type == "cpu" and native_kernels() is not None


def to_panels(matrix: QuantizedMatrix) -> PanelMatrix:
    """``matrix`` reordered into panels (check :func:`supports_panels` first)."""
    rows, _ = matrix.shape
    if matrix.bits == 8:
        data = _panels(matrix.data)
    else:
        columns = _panels(matrix.integers().to(torch.uint8))
        data = (columns[:, 0::2] | (columns[:, 1::2] << 4)).contiguous()
    offsets = None if matrix.offsets is None else _panels(matrix.offsets)
    return PanelMatrix(
        matrix.bits,
        matrix.group_size,
        rows,
        data,
        _panels(matrix.scales),
        offsets,
        matrix.input_order,
    )


def panel_matmul(
    x: torch.Tensor, matrix: PanelMatrix, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ W.T + bias`` on the CPU kernel, computed in fp32, returned in ``x``'s dtype."""
    library = native_kernels()
    if library is None:
        raise RuntimeError("Prism's CPU kernels are not available")
    rows, cols = matrix.shape
    if x.dim() != 2 or x.shape[1] != cols:
        raise ValueError(f"quantized matmul: x must be [rows, {cols}], not {list(x.shape)}")
    if x.device.type != "cpu" or (bias is not None and bias.device.type != "cpu"):
        raise ValueError("quantized matmul: CPU tensors only")
    wide_x = x.float().contiguous()
    wide_bias = None if bias is None else bias.float().contiguous()
    out = torch.empty((x.shape[0], rows), dtype=torch.float32)
    status = library.prism_quantized_matmul(
        wide_x.data_ptr(),
        x.shape[0],
        cols,
        matrix.data.data_ptr(),
        matrix.scales.data_ptr(),
        None if matrix.offsets is None else matrix.offsets.data_ptr(),
        rows,
        matrix.group_size,
        matrix.bits,
        None if wide_bias is None else wide_bias.data_ptr(),
        out.data_ptr(),
        torch.get_num_threads(),
    )
    if status != 0:
        raise ValueError(f"quantized matmul: group size {matrix.group_size} is not supported")
    return out.to(x.dtype)
