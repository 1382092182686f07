"""Prism's own forward pass for Llama-family models over a paged KV cache.

q/k/v and gate/up projections are fused into one matrix each at load time. Logits are
computed only for the rows that sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prism.engine.attention import AttentionBatch, paged_attention, write_kv
from prism.engine.rotary import RotaryEmbedding, Rotation
from prism.models import ModelConfig

Weights = dict[str, torch.Tensor]


def _param(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


def _linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ weight.T + bias`` in the weight's dtype, returned in the activations' dtype.

    With bf16 weights and fp32 activations only the matrix product runs in bf16.
    """
    if weight.dtype == x.dtype:
        return F.linear(x, weight, bias)
    return F.linear(x.to(weight.dtype), weight, bias).to(x.dtype)


def _take(weights: Weights, name: str) -> torch.Tensor:
    try:
        return weights.pop(name)
    except KeyError:
        raise ValueError(f"checkpoint has no tensor {name!r}") from None


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.weight = _param((size,), dtype, device)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(in_dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype, device: torch.device) -> None:
        """``dtype`` is the dtype of the projection weights."""
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        q_size = config.num_heads * config.head_dim
        kv_size = config.num_kv_heads * config.head_dim
        self.split = (q_size, kv_size, kv_size)
        self.qkv_weight = _param((q_size + 2 * kv_size, config.hidden_size), dtype, device)
        self.qkv_bias = (
            _param((q_size + 2 * kv_size,), dtype, device) if config.attention_bias else None
        )
        self.o_weight = _param((config.hidden_size, q_size), dtype, device)
        self.o_bias: nn.Parameter | None = None

    def load(self, weights: Weights, prefix: str) -> None:
        names = ("q_proj", "k_proj", "v_proj")
        self.qkv_weight.copy_(torch.cat([_take(weights, f"{prefix}.{n}.weight") for n in names]))
        if self.qkv_bias is not None:
            self.qkv_bias.copy_(torch.cat([_take(weights, f"{prefix}.{n}.bias") for n in names]))
        self.o_weight.copy_(_take(weights, f"{prefix}.o_proj.weight"))
        o_bias = weights.pop(f"{prefix}.o_proj.bias", None)
        if o_bias is not None:
            self.o_bias = nn.Parameter(o_bias.to(self.o_weight), requires_grad=False)

    def forward(
        self,
        x: torch.Tensor,
        rotation: Rotation,
        kv_cache: torch.Tensor,
        batch: AttentionBatch,
    ) -> torch.Tensor:
        q, k, v = _linear(x, self.qkv_weight, self.qkv_bias).split(self.split, dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        q, k = rotation.apply(q, k)
        k_cache, v_cache = kv_cache[0], kv_cache[1]
        write_kv(k_cache, v_cache, k, v, batch.slot_mapping)
        out = paged_attention(q, k_cache, v_cache, batch)
        return _linear(out.reshape(x.shape[0], -1), self.o_weight, self.o_bias)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        size = config.intermediate_size
        self.gate_up_weight = _param((2 * size, config.hidden_size), dtype, device)
        self.down_weight = _param((config.hidden_size, size), dtype, device)

    def load(self, weights: Weights, prefix: str) -> None:
        gate = _take(weights, f"{prefix}.gate_proj.weight")
        up = _take(weights, f"{prefix}.up_proj.weight")
        self.gate_up_weight.copy_(torch.cat([gate, up]))
        self.down_weight.copy_(_take(weights, f"{prefix}.down_proj.weight"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = _linear(x, self.gate_up_weight).chunk(2, dim=-1)
        return _linear(F.silu(gate) * up, self.down_weight)


class DecoderLayer(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype,
        weight_dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        self.attention = Attention(config, weight_dtype, device)
        self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        self.mlp = MLP(config, weight_dtype, device)

    def load(self, weights: Weights, prefix: str) -> None:
        self.input_norm.weight.copy_(_take(weights, f"{prefix}.input_layernorm.weight"))
        self.attention.load(weights, f"{prefix}.self_attn")
        self.post_attention_norm.weight.copy_(
            _take(weights, f"{prefix}.post_attention_layernorm.weight")
        )
        self.mlp.load(weights, f"{prefix}.mlp")

    def forward(
        self,
        x: torch.Tensor,
        rotation: Rotation,
        kv_cache: torch.Tensor,
        batch: AttentionBatch,
    ) -> torch.Tensor:
        x = x + self.attention(self.input_norm(x), rotation, kv_cache, batch)
        return x + self.mlp(self.post_attention_norm(x))


class LlamaModel(nn.Module):
    """A Llama/Mistral/Qwen2 decoder whose attention reads and writes a paged KV cache.

    Activations, norms and the KV cache are in ``dtype``; the matrices (projections,
    embedding, LM head) in ``weight_dtype`` (by default the same).
    """

    def __init__(
        self,
        config: ModelConfig,
        max_positions: int,
        dtype: torch.dtype,
        device: torch.device,
        weight_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if config.mlp_bias:
            raise ValueError("MLP biases are not supported")
        self.config = config
        weight_dtype = weight_dtype or dtype
        self.embed_weight = _param((config.vocab_size, config.hidden_size), weight_dtype, device)
        self.layers = nn.ModuleList(
            DecoderLayer(config, dtype, weight_dtype, device) for _ in range(config.num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        # The LM head stays in the activations' dtype: bf16 logits would round away the
        # margins that greedy decisions depend on.
        self.lm_head_weight = (
            self.embed_weight
            if config.tie_word_embeddings and weight_dtype == dtype
            else _param((config.vocab_size, config.hidden_size), dtype, device)
        )
        self.rotary = RotaryEmbedding(
            config.head_dim, config.rope_theta, config.rope_scaling, max_positions, dtype, device
        )

    @torch.inference_mode()
    def load_weights(self, weights: Weights) -> None:
        """Copy a Hugging Face checkpoint's tensors in (``weights`` is consumed)."""
        weights = dict(weights)
        embeddings = _take(weights, "model.embed_tokens.weight")
        self.embed_weight.copy_(embeddings)
        for index, layer in enumerate(self.layers):
            layer.load(weights, f"model.layers.{index}")
        self.norm.weight.copy_(_take(weights, "model.norm.weight"))
        head = weights.pop("lm_head.weight", None)
        if self.config.tie_word_embeddings:
            head = embeddings
        if self.lm_head_weight is not self.embed_weight:
            if head is None:
                raise ValueError("checkpoint has no lm_head.weight and does not tie embeddings")
            self.lm_head_weight.copy_(head)
        leftover = [name for name in weights if "rotary_emb" not in name]
        if leftover:
            raise ValueError(f"checkpoint tensors not used by the model: {leftover[:5]}")

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: torch.Tensor,
        batch: AttentionBatch,
    ) -> torch.Tensor:
        """Hidden states [tokens, hidden] after the final norm; K/V go into ``kv_caches``."""
        x = F.embedding(input_ids, self.embed_weight).to(self.rotary.cos.dtype)
        rotation = self.rotary.at(positions)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, rotation, kv_cache, batch)
        return self.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return _linear(hidden, self.lm_head_weight).float()
