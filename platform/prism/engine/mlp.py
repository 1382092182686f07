"""The gated MLP of a decoder layer (SwiGLU, or GELU for Gemma), tensor-parallel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prism.engine.layers import INPUT_DIM, OUTPUT_DIM, ShardLoader, parameter
from prism.engine.matmul import linear
from prism.engine.parallel import TensorParallelGroup


def activation(name: str, gate: torch.Tensor) -> torch.Tensor:
    """The MLP's gate activation, in place where it can be."""
    if name == "gelu_pytorch_tanh":
        return F.gelu(gate, approximate="tanh")
    return F.silu(gate, inplace=True)


class MLP(nn.Module):
    """``down(act(gate(x)) * up(x))``; each rank holds ``size / ranks`` of the features."""

    def __init__(
        self,
        hidden_size: int,
        size: int,
        act: str,
        dtype: torch.dtype,
        device: torch.device,
        group: TensorParallelGroup,
    ) -> None:
        super().__init__()
        self.group = group
        self.act = act
        part = size // group.size
        self.gate_up_weight = parameter((2 * part, hidden_size), dtype, device)
        self.down_weight = parameter((hidden_size, part), dtype, device)

    def load(
        self, loader: ShardLoader, prefix: str, names: tuple[str, str, str] | None = None
    ) -> None:
        """Read ``{prefix}.{gate|up|down}`` (by default gate_proj, up_proj, down_proj)."""
        gate, up, down = names or ("gate_proj", "up_proj", "down_proj")
        loader.load_matrix(
            self, "gate_up_weight", [f"{prefix}.{gate}", f"{prefix}.{up}"], OUTPUT_DIM
        )
        loader.load_matrix(self, "down_weight", [f"{prefix}.{down}"], INPUT_DIM)

    def partial(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's share of the output (the ranks' shares sum to it)."""
        gate, up = linear(x, self.gate_up_weight).chunk(2, dim=-1)
        return linear(activation(self.act, gate).mul_(up), self.down_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.all_reduce(self.partial(x))
