"""A mixture-of-experts MLP: each token's router picks its top-k experts.

Dispatch is batched per expert: the (token, expert) pairs are sorted by expert, and each
expert that any token chose runs once, as two matrix products over all of its tokens. The
loop is over the experts hit in the step, never over tokens.

Under tensor parallelism every rank holds a slice of every expert (its share of each
expert's intermediate features, as a dense MLP is split), so routing needs no exchange of
tokens: the ranks' partial outputs, routed and shared expert together, are summed in one
all-reduce.
"""

from __future__ import annotations

import torch
from torch import nn

from prism.engine.layers import INPUT_DIM, ShardLoader, parameter
from prism.engine.matmul import linear
from prism.engine.mlp import MLP, activation
from prism.engine.parallel import TensorParallelGroup
from prism.models.architectures import MixtureOfExperts


class SparseMoE(nn.Module):
    """Routed experts, plus a shared expert gated by a sigmoid where the family has one."""

    def __init__(
        self,
        hidden_size: int,
        mixture: MixtureOfExperts,
        act: str,
        dtype: torch.dtype,
        device: torch.device,
        group: TensorParallelGroup,
    ) -> None:
        super().__init__()
        self.mixture = mixture
        self.act = act
        self.group = group
        part = mixture.expert_size // group.size
        experts = mixture.num_experts
        self.router_weight = parameter((experts, hidden_size), dtype, device)
        self.gate_up = parameter((experts, 2 * part, hidden_size), dtype, device)
        self.down = parameter((experts, hidden_size, part), dtype, device)
        self.shared_expert: MLP | None = None
        self.shared_expert_gate: nn.Parameter | None = None
        if mixture.shared_expert_size:
            self.shared_expert = MLP(
                hidden_size, mixture.shared_expert_size, act, dtype, device, group
            )
            self.shared_expert_gate = parameter((1, hidden_size), dtype, device)

    def load(self, loader: ShardLoader, prefix: str) -> None:
        layout = self.mixture.layout
        loader.fill(self.router_weight, f"{prefix}.gate.weight")
        for index in range(self.mixture.num_experts):
            expert = f"{prefix}.experts.{index}"
            gate_up = [f"{expert}.{layout.gate}.weight", f"{expert}.{layout.up}.weight"]
            loader.fill_fused(self.gate_up[index], gate_up)
            loader.fill(self.down[index], f"{expert}.{layout.down}.weight", INPUT_DIM)
        if self.shared_expert is not None and self.shared_expert_gate is not None:
            self.shared_expert.load(loader, f"{prefix}.shared_expert")
            loader.fill(self.shared_expert_gate, f"{prefix}.shared_expert_gate.weight")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, experts = self._route(x)
        out = self._dispatch(x, weights, experts)
        if self.shared_expert is not None and self.shared_expert_gate is not None:
            scale = torch.sigmoid(linear(x, self.shared_expert_gate))
            out.add_(self.shared_expert.partial(x).mul_(scale))
        return self.group.all_reduce(out)

    def _route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's top-k experts [tokens, k] and their weights (softmax in fp32)."""
        probabilities = linear(x, self.router_weight).softmax(dim=-1, dtype=torch.float)
        weights, experts = probabilities.topk(self.mixture.experts_per_token, dim=-1)
        if self.mixture.normalize_weights:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(x.dtype), experts

    def _dispatch(
        self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor
    ) -> torch.Tensor:
        """Sum over each token's experts of weight * expert(token), one batch per expert."""
        chosen = experts.flatten()
        pairs = chosen.argsort(stable=True)  # (token, slot) pairs grouped by expert
        tokens = pairs // experts.shape[1]
        pair_weights = weights.flatten()[pairs, None]
        counts = torch.bincount(chosen, minlength=self.mixture.num_experts).tolist()
        out = torch.zeros_like(x)
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            rows = slice(start, start + count)
            hidden = x[tokens[rows]]
            gate, up = linear(hidden, self.gate_up[expert]).chunk(2, dim=-1)
            expert_out = linear(activation(self.act, gate).mul_(up), self.down[expert])
            out.index_add_(0, tokens[rows], expert_out.mul_(pair_weights[rows]))
            start += count
        return out
