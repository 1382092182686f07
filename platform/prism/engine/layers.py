"""Building blocks every decoder family shares: parameters, the RMS norm, row-parallel
products and the loader that reads one tensor-parallel rank's part of a checkpoint."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prism.engine.matmul import Weight, linear
from prism.engine.parallel import TensorParallelGroup
from prism.models import Checkpoint, Shard
from prism.models.prequantized import PrequantizedFormat
from prism.models.quantized import QuantizedMatrix, stack_rows

OUTPUT_DIM = 0
"""A weight's output-feature dimension (its rows): column-parallel layers split it."""
INPUT_DIM = 1
"""A weight's input-feature dimension (its columns): row-parallel layers split it."""


def parameter(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


def row_parallel(
    x: torch.Tensor,
    weight: Weight,
    bias: torch.Tensor | None,
    group: TensorParallelGroup,
) -> torch.Tensor:
    """A product over this rank's input columns, summed over the ranks; bias added once."""
    if group.size == 1:
        return linear(x, weight, bias)
    out = group.all_reduce(linear(x, weight))
    return out if bias is None else out + bias


class ShardLoader:
    """Reads one rank's part of each checkpoint tensor into a parameter, or of each
    quantized linear layer into a :class:`QuantizedMatrix`."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        group: TensorParallelGroup,
        prequantized: PrequantizedFormat | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.group = group
        self.prequantized = prequantized

    def read(self, name: str, like: torch.Tensor, split: int | None = None) -> torch.Tensor:
        shard = None if split is None else self.group.shard(split)
        return self.checkpoint.read(name, like.dtype, like.device, shard)

    def fill(self, target: torch.Tensor, name: str, split: int | None = None) -> None:
        target.copy_(self.read(name, target, split))

    def fill_fused(self, target: torch.Tensor, names: list[str]) -> None:
        """Row-split tensors stacked, each contributing this rank's rows."""
        target.copy_(torch.cat([self.read(name, target, OUTPUT_DIM) for name in names]))

    def load_matrix(self, module: nn.Module, attr: str, linears: list[str], split: int) -> None:
        """``module.attr`` from the linear layers ``linears``, stacked by rows.

        A checkpoint's quantized layers replace the parameter with this rank's part of them
        in Prism's layout; full-precision ones are copied into it.
        """
        quantized = self._quantized(linears, split)
        if quantized is not None:
            delattr(module, attr)
            setattr(module, attr, quantized)
            for name in linears:  # a full-precision copy beside it is superseded
                self.checkpoint.skip(f"{name}.weight")
        elif len(linears) == 1:
            self.fill(getattr(module, attr), f"{linears[0]}.weight", split)
        else:
            self.fill_fused(getattr(module, attr), [f"{name}.weight" for name in linears])

    def _quantized(self, linears: list[str], split: int) -> QuantizedMatrix | None:
        if self.prequantized is None:
            return None
        matrices = [self.prequantized.read(self.checkpoint, name) for name in linears]
        present = [matrix for matrix in matrices if matrix is not None]
        if not present:
            return None
        if len(present) < len(matrices):
            raise ValueError(f"the checkpoint quantizes only some of {linears}")
        shard = self.group.shard(split)
        return stack_rows([_rank_part(matrix, shard) for matrix in present])


def _rank_part(matrix: QuantizedMatrix, shard: Shard | None) -> QuantizedMatrix:
    """This rank's rows (output features) or columns (input features) of ``matrix``."""
    if shard is None:
        return matrix
    rows, cols = matrix.shape
    if shard.dim == OUTPUT_DIM:
        return matrix.row_span(*shard.span(rows))
    start, stop, _ = shard.span(cols)
    return matrix.column_span(start, stop)


class RMSNorm(nn.Module):
    """RMS norm; ``weight_offset`` is added to the stored weight at load (Gemma scales by
    1 + w)."""

    def __init__(
        self,
        size: int,
        eps: float,
        dtype: torch.dtype,
        device: torch.device,
        weight_offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.weight = parameter((size,), dtype, device)
        self.eps = eps
        self.weight_offset = weight_offset

    def load(self, loader: ShardLoader, name: str) -> None:
        loader.fill(self.weight, name)
        self.weight.add_(self.weight_offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized in fp32, rounded to ``x``'s dtype, then scaled (the order HF uses)."""
        return F.rms_norm(x, (x.shape[-1],), eps=self.eps).mul_(self.weight)
