"""What each supported Hugging Face architecture adds to the Llama decoder.

The engine runs one decoder; a family is the set of switches (biases, head norms, experts,
Gemma's norms and scales) and checkpoint names that make it that family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ExpertLayout:
    """Where a family's sparse MLP keeps its tensors: ``{module}.gate`` routes,
    ``{module}.experts.{i}.{gate|up|down}`` are the experts, and (with ``shared_expert``)
    ``{module}.shared_expert`` is a dense MLP scaled by ``{module}.shared_expert_gate``."""

    module: str
    gate: str
    up: str
    down: str
    shared_expert: bool
    always_normalize: bool
    """The top-k routing weights are renormalised to sum to 1 whatever the config says."""


@dataclass(frozen=True, slots=True)
class Family:
    qkv_bias: bool = False
    qk_norm: bool = False
    window_opt_in: bool = False
    """The config's sliding window applies only with ``use_sliding_window`` (Qwen)."""
    experts: ExpertLayout | None = None
    gemma: bool = False
    """Gemma's (1 + w) norms, scaled embeddings, sandwich norms and GELU MLP."""


_QWEN_EXPERTS = ExpertLayout(
    "mlp", "gate_proj", "up_proj", "down_proj", shared_expert=False, always_normalize=False
)

FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": Family(),
    "MistralForCausalLM": Family(),
    "Qwen2ForCausalLM": Family(qkv_bias=True, window_opt_in=True),
    "Qwen3ForCausalLM": Family(qk_norm=True, window_opt_in=True),
    "Qwen2MoeForCausalLM": Family(
        qkv_bias=True,
        window_opt_in=True,
        experts=ExpertLayout(
            "mlp", "gate_proj", "up_proj", "down_proj", shared_expert=True, always_normalize=False
        ),
    ),
    "Qwen3MoeForCausalLM": Family(qk_norm=True, window_opt_in=True, experts=_QWEN_EXPERTS),
    "MixtralForCausalLM": Family(
        experts=ExpertLayout(
            "block_sparse_moe", "w1", "w3", "w2", shared_expert=False, always_normalize=True
        )
    ),
    "Gemma3ForCausalLM": Family(qk_norm=True, gemma=True),
}


@dataclass(frozen=True, slots=True)
class MixtureOfExperts:
    """The sparse MLP layers of a mixture-of-experts model.

    Each token's router picks ``experts_per_token`` of ``num_experts`` experts (MLPs of
    ``expert_size``); their outputs are summed, weighted by the router's softmax
    probabilities (renormalised over the chosen ones when ``normalize_weights``). A shared
    expert of ``shared_expert_size`` (0: none) sees every token. ``sparse_layers`` says, per
    layer, whether it has experts or a dense MLP.
    """

    layout: ExpertLayout
    num_experts: int
    experts_per_token: int
    expert_size: int
    shared_expert_size: int
    normalize_weights: bool
    sparse_layers: tuple[bool, ...]


def mixture_of_experts(raw: dict[str, Any], family: Family) -> MixtureOfExperts | None:
    """The experts a config describes, or None for a dense model."""
    layout = family.experts
    if layout is None:
        return None
    num_experts = int(raw.get("num_experts") or raw.get("num_local_experts") or 0)
    num_layers = int(raw["num_hidden_layers"])
    dense_layers = set(raw.get("mlp_only_layers") or [])
    step = int(raw.get("decoder_sparse_step") or 1)
    sparse_layers = tuple(
        num_experts > 0 and index not in dense_layers and (index + 1) % step == 0
        for index in range(num_layers)
    )
    return MixtureOfExperts(
        layout=layout,
        num_experts=num_experts,
        experts_per_token=int(raw["num_experts_per_tok"]),
        expert_size=int(raw.get("moe_intermediate_size") or raw["intermediate_size"]),
        shared_expert_size=int(raw.get("shared_expert_intermediate_size") or 0)
        if layout.shared_expert
        else 0,
        normalize_weights=layout.always_normalize or bool(raw.get("norm_topk_prob", False)),
        sparse_layers=sparse_layers,
    )
