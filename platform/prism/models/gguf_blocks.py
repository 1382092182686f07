"""Repack GGUF quantized blocks into Prism's ``QuantizedMatrix``, bit for bit.

GGUF stores a [rows, cols] matrix row after row (its ``ne[0]`` is ``cols``), each row a run of
blocks. Every supported block type maps onto ``weight = q * scale + offset`` per group without
requantizing (``d``/``dmin``/``m`` are a block's f16 fields, ``sc_j``/``m_j`` its sub-block
scales and mins):

=========  ====  =====  ==============================  ===========  ===========
GGUF type  bits  group  q                               scale        offset
=========  ====  =====  ==============================  ===========  ===========
Q8_0       8     32     int8 q                          d            none
Q8_K       8     256    int8 q                          d (fp32)     none
Q4_0       4     32     q (0..15)                       d            -8 d
Q4_1       4     32     q (0..15)                       d            m
Q4_K       4     32     q (0..15), nibbles re-ordered   d * sc_j     -dmin * m_j
Q5_0       8     32     q - 16 (-16..15)                d            none
Q5_1       8     32     q (0..31)                       d            m
Q5_K       8     32     q (0..31)                       d * sc_j     -dmin * m_j
Q6_K       8     16     q - 32 (-32..31)                d * sc_j     none
=========  ====  =====  ==============================  ===========  ===========

Q4_0 and Q4_1 already pack nibbles in Prism's order; Q4_K packs sub-blocks 2i and 2i+1 into
the low and high nibbles of the same 32 bytes, so its bytes are re-paired. The scale and
offset products (an f16 times an integer of at most 8 bits) are exact in fp32, and
``dequantize()`` then rounds ``q * scale + offset`` as gguf's own dequantizer does (Q4_0's
``q * d - 8 d`` is exact too), so it equals ``gguf.quants.dequantize`` bit for bit. F32, F16
and BF16 are not quantized and, like every type not in ``REPACKABLE_GGUF_TYPES``, raise
ValueError: the caller loads them as dense tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from prism.models.quantized import QuantizedMatrix

Bytes = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.integer[Any]]
Floats = npt.NDArray[np.float32]
Unpacked = tuple[npt.NDArray[Any], Floats, Floats | None]
"""Per block: the integers (int8, or uint8 packed 4-bit), the scales and the offsets."""

LOW_NIBBLE = 0x0F
HIGH_NIBBLE = 0xF0


@dataclass(frozen=True, slots=True)
class _BlockFormat:
    bits: int
    group_size: int
    unpack: Callable[[Bytes], Unpacked]


def repack_gguf_tensor(
    raw: Bytes, quant_type: GGMLQuantizationType, shape: tuple[int, int]
) -> QuantizedMatrix:
    """The [rows, cols] matrix ``shape`` stored as GGUF ``quant_type`` blocks in ``raw``.

    ``raw`` is the tensor's bytes in any shape (``GGUFReader``'s ``tensor.data``); ``shape``
    is PyTorch's order, the reverse of GGUF's dims. Raises ValueError for a type that is not
    in ``REPACKABLE_GGUF_TYPES`` or bytes that do not fit ``shape``.
    """
    block_format = _FORMATS.get(quant_type)
    if block_format is None:
        raise ValueError(f"GGUF type {quant_type.name} cannot be repacked into a quantized matrix")
    rows, cols = shape
    block_size, type_size = GGML_QUANT_SIZES[quant_type]
    if cols % block_size:
        raise ValueError(f"{quant_type.name} blocks of {block_size} do not divide {cols} columns")
    raw = np.asarray(raw)
    n_blocks = rows * cols // block_size
    if raw.dtype != np.uint8 or raw.size != n_blocks * type_size:
        raise ValueError(
            f"{quant_type.name} {rows}x{cols} needs {n_blocks * type_size} uint8 bytes, "
            f"not {raw.size} {raw.dtype}"
        )
    data, scales, offsets = block_format.unpack(raw.reshape(n_blocks, type_size))
    return QuantizedMatrix(
        bits=block_format.bits,
        group_size=block_format.group_size,
        data=_rows(data, rows),
        scales=_rows(scales, rows),
        offsets=None if offsets is None else _rows(offsets, rows),
    )


def _rows(blocks: npt.NDArray[Any], rows: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(blocks.reshape(rows, -1)))


def _float(blocks: Bytes, start: int, dtype: type[np.floating[Any]]) -> Floats:
    """The float field at byte ``start`` of each block, as fp32 [n_blocks, 1]."""
    width = np.dtype(dtype).itemsize
    field = np.ascontiguousarray(blocks[:, start : start + width])
    return field.view(dtype).astype(np.float32)


def _nibbles(packed: Bytes, run: int) -> Ints:
    """[n, k] bytes unpacked to [n, 2k] values: per ``run`` bytes, low nibbles then high."""
    runs = packed.reshape(len(packed), -1, 1, run)
    return np.concatenate([runs & LOW_NIBBLE, runs >> 4], axis=2).reshape(len(packed), -1)


def _fifth_bits(packed: Bytes) -> Ints:
    """Q5_0/Q5_1's 32-bit little-endian mask [n, 4] as bit i of value i, shifted to bit 4."""
    return np.unpackbits(packed, axis=1, bitorder="little") << 4


def _k_scales(packed: Bytes) -> tuple[Floats, Floats]:
    """Q4_K/Q5_K's 12 bytes of 6-bit scales and mins, each [n, 8] fp32.

    Bytes 0-3 hold scales 0-3 and bytes 4-7 mins 0-3 in their low 6 bits; their top 2 bits
    are the high bits of scales and mins 4-7, whose low 4 bits are bytes 8-11's nibbles.
    """
    scales, mins, rest = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    sc = np.concatenate([scales & 0x3F, (rest & LOW_NIBBLE) | ((scales >> 6) << 4)], axis=1)
    m = np.concatenate([mins & 0x3F, (rest >> 4) | ((mins >> 6) << 4)], axis=1)
    return sc.astype(np.float32), m.astype(np.float32)


def _q8_0(blocks: Bytes) -> Unpacked:
    return blocks[:, 2:].view(np.int8).copy(), _float(blocks, 0, np.float16), None


def _q8_k(blocks: Bytes) -> Unpacked:
    return blocks[:, 4:260].view(np.int8).copy(), _float(blocks, 0, np.float32), None


def _q4_0(blocks: Bytes) -> Unpacked:
    d = _float(blocks, 0, np.float16)
    return blocks[:, 2:].copy(), d, -8 * d


def _q4_1(blocks: Bytes) -> Unpacked:
    return blocks[:, 4:].copy(), _float(blocks, 0, np.float16), _float(blocks, 2, np.float16)


def _q4_k(blocks: Bytes) -> Unpacked:
    d, dmin = _float(blocks, 0, np.float16), _float(blocks, 2, np.float16)
    sc, m = _k_scales(blocks[:, 4:16])
    # 32 bytes hold sub-block 2i in their low nibbles and 2i+1 in their high ones; Prism
    # pairs byte j's nibble with byte j + 16's, one sub-block per 16 bytes.
    first, second = np.split(blocks[:, 16:].reshape(-1, 4, 2, 16), 2, axis=2)
    even = (first & LOW_NIBBLE) | (second << 4)
    odd = (first >> 4) | (second & HIGH_NIBBLE)
    data = np.concatenate([even, odd], axis=2).reshape(-1, 128)
    return data, d * sc, -(dmin * m)


def _q5_0(blocks: Bytes) -> Unpacked:
    q = _nibbles(blocks[:, 6:], 16) | _fifth_bits(blocks[:, 2:6])
    return q.astype(np.int8) - 16, _float(blocks, 0, np.float16), None


def _q5_1(blocks: Bytes) -> Unpacked:
    q = _nibbles(blocks[:, 8:], 16) | _fifth_bits(blocks[:, 4:8])
    return q.astype(np.int8), _float(blocks, 0, np.float16), _float(blocks, 2, np.float16)


def _q5_k(blocks: Bytes) -> Unpacked:
    d, dmin = _float(blocks, 0, np.float16), _float(blocks, 2, np.float16)
    sc, m = _k_scales(blocks[:, 4:16])
    # Each 32 bytes of nibbles hold two sub-blocks (low, then high nibbles); bit s of the
    # 32 mask bytes is the fifth bit of sub-block s.
    shifts = np.arange(8, dtype=np.uint8)[:, None]
    high = ((blocks[:, None, 16:48] >> shifts) & 1).reshape(-1, 256)
    q = _nibbles(blocks[:, 48:], 32) | (high << 4)
    return q.astype(np.int8), d * sc, -(dmin * m)


def _q6_k(blocks: Bytes) -> Unpacked:
    # Each half of 128 values: 64 bytes of low nibbles (values 0-63, then 64-127) and 32
    # bytes whose bit pairs 0-1, 2-3, 4-5, 6-7 are the top bits of values 0-31, ..., 96-127.
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[:, None]
    high = ((blocks[:, 128:192].reshape(-1, 2, 1, 32) >> shifts) & 3).reshape(-1, 256)
    q = _nibbles(blocks[:, :128], 64) | (high << 4)
    sc = blocks[:, 192:208].view(np.int8).astype(np.float32)
    return q.astype(np.int8) - 32, _float(blocks, 208, np.float16) * sc, None


_FORMATS: dict[GGMLQuantizationType, _BlockFormat] = {
    GGMLQuantizationType.Q8_0: _BlockFormat(8, 32, _q8_0),
    GGMLQuantizationType.Q8_K: _BlockFormat(8, 256, _q8_k),
    GGMLQuantizationType.Q4_0: _BlockFormat(4, 32, _q4_0),
    GGMLQuantizationType.Q4_1: _BlockFormat(4, 32, _q4_1),
    GGMLQuantizationType.Q4_K: _BlockFormat(4, 32, _q4_k),
    GGMLQuantizationType.Q5_0: _BlockFormat(8, 32, _q5_0),
    GGMLQuantizationType.Q5_1: _BlockFormat(8, 32, _q5_1),
    GGMLQuantizationType.Q5_K: _BlockFormat(8, 32, _q5_k),
    GGMLQuantizationType.Q6_K: _BlockFormat(8, 16, _q6_k),
}

REPACKABLE_GGUF_TYPES: frozenset[GGMLQuantizationType] = frozenset(_FORMATS)
"""GGUF types ``repack_gguf_tensor`` accepts."""
