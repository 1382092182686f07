"""Matrix products with weights in their stored dtype, the fastest way the device allows.

fp32 products on a CPU run on oneDNN's GEMM where torch has it: on the AMD EPYC CPUs
measured it was 15-25% faster than the MKL GEMM behind ``F.linear`` for the layers' matrices
and up to 40% for the LM head, at 1 to 256 rows (``docs/benchmarks.md``).

CPUs without bf16 dot-product instructions (AVX2, or AVX-512 without BF16) run bf16
GEMMs several times slower than fp32 ones once a product has more than a few rows. There a
bf16 weight is widened to fp32 for the product: the same bf16 inputs, accumulated in fp32
and rounded once, as a native bf16 GEMM does. Products of a few rows are bound by reading
the weights, so they keep the bf16 kernel, which reads half the bytes.

Quantized matrices are laid out once in panels for Prism's own CPU kernel
(:mod:`prism.engine.quantized_panels`). Where it cannot run (CUDA, or no kernels built), a
:class:`QuantizedMatrix` is widened to the activations' dtype for each product.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

from prism.engine.quantized_panels import PanelMatrix, panel_matmul, supports_panels, to_panels
from prism.models.quantized import QuantizedMatrix

NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""``/proc/cpuinfo`` flags of CPUs with bf16 dot-product instructions."""

WIDEN_MIN_ROWS = 8
"""From this many rows a bf16 product runs in fp32 on CPUs without bf16 instructions."""

Weight = torch.Tensor | QuantizedMatrix | PanelMatrix
"""A layer's matrix: a tensor in its stored dtype, or quantized (in panels on CPU)."""


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (False where its flags cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return not NATIVE_BF16_CPU_FLAGS.isdisjoint(line.split(":", 1)[1].split())
    return False


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` through oneDNN's fp32 GEMM (the op torch's own CPU compiler emits)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


_HAS_ONEDNN = torch.backends.mkldnn.is_available()

PACK_ROWS_HINT = 64
"""The row count a packed weight's layout is tuned for: a full decode batch."""


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` laid out once in oneDNN's own blocked format, where its fp32 GEMM runs it.

    The GEMM then skips reordering the weight on every call: 13-18% faster at 16-64 rows
    on the EPYC CPUs measured, the same at 1 and at 2,000 rows, with the same results
    (``docs/benchmarks.md``). Other weights are returned unchanged.
    """
    if not (_HAS_ONEDNN and weight.dtype == torch.float32 and weight.device.type == "cpu"):
        return weight
    return torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS_HINT)


def _fp32_cpu(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        _HAS_ONEDNN
        and x.dtype == weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and x.dim() == 2
    )


def widens(tensor: torch.Tensor) -> bool:
    """Whether products of this bf16 CPU tensor run faster widened to fp32 (no bf16 unit)."""
    return (
        tensor.dtype == torch.bfloat16 and tensor.device.type == "cpu" and not cpu_has_native_bf16()
    )


_scratch = threading.local()


def _widened(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in fp32, in a buffer this thread reuses for every weight of its shape.

    A fresh tensor per product would cost page faults on every step; the buffer is only
    read before the next product of the same shape, on the same thread, overwrites it.
    """
    buffers: dict[torch.Size, torch.Tensor] = _scratch.__dict__.setdefault("buffers", {})
    buffer = buffers.get(weight.shape)
    if buffer is None:
        buffer = buffers[weight.shape] = torch.empty(weight.shape, dtype=torch.float32)
    return buffer.copy_(weight)


def prepare_quantized(matrix: QuantizedMatrix) -> QuantizedMatrix | PanelMatrix:
    """``matrix`` laid out for the fastest product the device has (panels on CPU)."""
    return to_panels(matrix) if supports_panels(matrix) else matrix


def linear(x: torch.Tensor, weight: Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` with the weight's precision, returned in the activations' dtype.

    With bf16 weights and fp32 activations the activations are rounded to bf16 for the
    product either way, so widening (see the module's note) changes only the speed.
    """
    if isinstance(weight, PanelMatrix | QuantizedMatrix) and weight.input_order is not None:
        x = x.index_select(-1, weight.input_order)
    if isinstance(weight, PanelMatrix):
        return panel_matmul(x, weight, bias)
    if isinstance(weight, QuantizedMatrix):
        return F.linear(x, weight.dequantize(x.dtype), bias)
    if weight.is_mkldnn:
        return _onednn(x.to(weight.dtype), weight, bias).to(x.dtype)
    if x.shape[0] >= WIDEN_MIN_ROWS and widens(weight):
        wide_bias = None if bias is None else bias.float()
        wide_x = x.to(weight.dtype).float()
        return linear(wide_x, _widened(weight), wide_bias).to(x.dtype)
    if _fp32_cpu(x, weight):
        return _onednn(x, weight, bias)
    if weight.dtype == x.dtype:
        return F.linear(x, weight, bias)
    return F.linear(x.to(weight.dtype), weight, bias).to(x.dtype)
