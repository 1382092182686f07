"""Prism's own forward pass for Llama-family models over a paged KV cache.

q/k/v and gate/up projections are fused into one matrix each at load time. Logits are
computed only for the rows that sample.

Under tensor parallelism (Megatron layout) each rank holds a slice of every matrix: q/k/v
and gate/up by output rows (its heads, its part of the MLP), o and down by input columns
(summed over the ranks), the embedding and LM head by vocabulary rows.

With a :class:`QuantizationSpec` every matrix, the embedding and the LM head included, is
quantized as soon as its layer is loaded, so loading never holds more than one layer in
full precision beside the quantized ones. A checkpoint quantized by another tool (GPTQ,
AWQ, compressed-tensors) has its linear layers read straight into Prism's quantized layout;
its embedding and LM head are whatever precision it stores them in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from prism.engine.attention import AttentionBatch, paged_attention, write_kv
from prism.engine.experts import SparseMoE
from prism.engine.layers import (
    INPUT_DIM,
    OUTPUT_DIM,
    RMSNorm,
    ShardLoader,
    parameter,
    row_parallel,
)
from prism.engine.matmul import Weight, linear, pack_weight, prepare_quantized
from prism.engine.mlp import MLP
from prism.engine.parallel import TensorParallelGroup
from prism.engine.quantized_panels import PanelMatrix
from prism.engine.rotary import RotaryEmbedding, Rotation
from prism.models import Checkpoint, ModelConfig
from prism.models.prequantized import PrequantizedFormat
from prism.models.quantized import QuantizationSpec, QuantizedMatrix


class Attention(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype,
        weight_dtype: torch.dtype,
        device: torch.device,
        group: TensorParallelGroup,
        window: int | None = None,
    ) -> None:
        """``dtype`` is the activations' (and head norms'), ``weight_dtype`` the projection
        weights'; the rank holds its heads only. ``window``: the sliding window, if any."""
        super().__init__()
        self.group = group
        self.window = window
        self.num_heads = config.num_heads // group.size
        self.num_kv_heads = config.num_kv_heads // group.size
        self.head_dim = config.head_dim
        q_size = self.num_heads * config.head_dim
        kv_size = self.num_kv_heads * config.head_dim
        self.split = (q_size + kv_size, kv_size)
        self.qkv_weight = parameter(
            (q_size + 2 * kv_size, config.hidden_size), weight_dtype, device
        )
        self.qkv_bias = (
            parameter((q_size + 2 * kv_size,), weight_dtype, device)
            if config.attention_bias
            else None
        )
        self.o_weight = parameter((config.hidden_size, q_size), weight_dtype, device)
        self.o_bias: nn.Parameter | None = None
        self.q_norm = self.k_norm = None
        if config.qk_norm:  # one weight per head dimension, shared by the heads of every rank
            self.q_norm = _norm(config, config.head_dim, dtype, device)
            self.k_norm = _norm(config, config.head_dim, dtype, device)
        # Attention scales scores by head_dim ** -0.5; a family with another scale has its
        # queries rescaled to match (Gemma: query_pre_attn_scalar ** -0.5).
        self.query_scale: float | None = None
        scalar = config.query_pre_attn_scalar
        if scalar is not None and scalar != config.head_dim:
            self.query_scale = (config.head_dim / scalar) ** 0.5

    def load(self, loader: ShardLoader, prefix: str) -> None:
        names = ("q_proj", "k_proj", "v_proj")
        loader.load_matrix(self, "qkv_weight", [f"{prefix}.{n}" for n in names], OUTPUT_DIM)
        if self.qkv_bias is not None:
            loader.fill_fused(self.qkv_bias, [f"{prefix}.{n}.bias" for n in names])
        if f"{prefix}.o_proj.bias" in loader.checkpoint:  # before o_weight may be quantized
            o_bias = loader.read(f"{prefix}.o_proj.bias", cast(torch.Tensor, self.o_weight))
            self.o_bias = nn.Parameter(o_bias, requires_grad=False)
        loader.load_matrix(self, "o_weight", [f"{prefix}.o_proj"], INPUT_DIM)
        if self.q_norm is not None and self.k_norm is not None:
            self.q_norm.load(loader, f"{prefix}.q_norm.weight")
            self.k_norm.load(loader, f"{prefix}.k_norm.weight")

    def forward(
        self,
        x: torch.Tensor,
        rotation: Rotation,
        kv_cache: torch.Tensor,
        batch: AttentionBatch,
    ) -> torch.Tensor:
        qk, v = linear(x, self.qkv_weight, self.qkv_bias).split(self.split, dim=-1)
        qk = qk.view(-1, self.num_heads + self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = qk.split((self.num_heads, self.num_kv_heads), dim=1)
            qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=1)
        # Queries and keys are rotated together, as one set of heads.
        qk = rotation.apply(qk)
        q, k = qk.split((self.num_heads, self.num_kv_heads), dim=1)
        if self.query_scale is not None:
            q = q * self.query_scale
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        k_cache, v_cache = kv_cache[0], kv_cache[1]
        write_kv(k_cache, v_cache, k, v, batch.slot_mapping)
        out = paged_attention(q, k_cache, v_cache, batch, self.window)
        return row_parallel(out.reshape(x.shape[0], -1), self.o_weight, self.o_bias, self.group)


def _norm(config: ModelConfig, size: int, dtype: torch.dtype, device: torch.device) -> RMSNorm:
    """An RMS norm of the family's kind (Gemma's scale by 1 + w)."""
    return RMSNorm(size, config.rms_norm_eps, dtype, device, 1.0 if config.gemma else 0.0)


class DecoderLayer(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype,
        weight_dtype: torch.dtype,
        device: torch.device,
        group: TensorParallelGroup,
        layer_index: int,
    ) -> None:
        super().__init__()
        size = config.hidden_size
        window = config.layer_windows[layer_index] if config.layer_windows else None
        self.local_rope = config.gemma and window is not None
        """Whether the layer rotates with the windowed layers' RoPE (Gemma 3)."""
        self.input_norm = _norm(config, size, dtype, device)
        self.attention = Attention(config, dtype, weight_dtype, device, group, window)
        self.mlp_norm = _norm(config, size, dtype, device)
        mixture = config.mixture
        self.mlp: MLP | SparseMoE = (
            SparseMoE(size, mixture, config.hidden_act, weight_dtype, device, group)
            if mixture is not None and mixture.sparse_layers[layer_index]
            else MLP(size, config.intermediate_size, config.hidden_act, weight_dtype, device, group)
        )
        # Gemma normalises the attention and MLP outputs too, before the residual add.
        self.attention_out_norm = _norm(config, size, dtype, device) if config.gemma else None
        self.mlp_out_norm = _norm(config, size, dtype, device) if config.gemma else None

    def load(self, loader: ShardLoader, prefix: str) -> None:
        self.input_norm.load(loader, f"{prefix}.input_layernorm.weight")
        self.attention.load(loader, f"{prefix}.self_attn")
        if self.attention_out_norm is not None and self.mlp_out_norm is not None:
            self.attention_out_norm.load(loader, f"{prefix}.post_attention_layernorm.weight")
            self.mlp_norm.load(loader, f"{prefix}.pre_feedforward_layernorm.weight")
            self.mlp_out_norm.load(loader, f"{prefix}.post_feedforward_layernorm.weight")
        else:
            self.mlp_norm.load(loader, f"{prefix}.post_attention_layernorm.weight")
        if isinstance(self.mlp, SparseMoE):
            self.mlp.load(loader, f"{prefix}.{self.mlp.mixture.layout.module}")
        else:
            self.mlp.load(loader, f"{prefix}.mlp")

    def forward(
        self,
        x: torch.Tensor,
        rotation: Rotation,
        kv_cache: torch.Tensor,
        batch: AttentionBatch,
    ) -> torch.Tensor:
        # The residual stream is this step's own tensor: added to in place.
        attended = self.attention(self.input_norm(x), rotation, kv_cache, batch)
        if self.attention_out_norm is not None:
            attended = self.attention_out_norm(attended)
        x.add_(attended)
        mixed = self.mlp(self.mlp_norm(x))
        if self.mlp_out_norm is not None:
            mixed = self.mlp_out_norm(mixed)
        return x.add_(mixed)


class LlamaModel(nn.Module):
    """A decoder of any supported family (Llama, Mistral, Qwen 2/3, their mixture-of-experts
    variants, Mixtral, Gemma 3) whose attention reads and writes a paged KV cache.

    Activations, norms and the KV cache are in ``dtype``; the matrices (projections,
    embedding, LM head) in ``weight_dtype`` (by default the same). With a ``group`` of
    several ranks this is one rank's shard.
    """

    def __init__(
        self,
        config: ModelConfig,
        max_positions: int,
        dtype: torch.dtype,
        device: torch.device,
        weight_dtype: torch.dtype | None = None,
        group: TensorParallelGroup | None = None,
        quantization: QuantizationSpec | None = None,
    ) -> None:
        super().__init__()
        if config.mlp_bias:
            raise ValueError("MLP biases are not supported")
        if config.mixture is not None and quantization is not None:
            raise ValueError("quantizing a mixture-of-experts model is not supported")
        self.config = config
        self.activation_dtype = dtype
        self.quantization = quantization
        self.group = group or TensorParallelGroup(device=device)
        self.vocab_part = -(-config.vocab_size // self.group.size)
        self.vocab_start = self.group.rank * self.vocab_part
        weight_dtype = weight_dtype or dtype
        self.embed_weight: Weight = parameter(
            (self.vocab_part, config.hidden_size), weight_dtype, device
        )
        self.layers = nn.ModuleList(
            DecoderLayer(config, dtype, weight_dtype, device, self.group, index)
            for index in range(config.num_layers)
        )
        self.norm = _norm(config, config.hidden_size, dtype, device)
        # Gemma scales embeddings by sqrt(hidden_size), rounded to the weights' dtype as HF does.
        self.embed_scale = (
            float(torch.tensor(config.hidden_size**0.5, dtype=weight_dtype))
            if config.gemma
            else None
        )
        # The LM head stays in the activations' dtype: bf16 logits would round away the
        # margins that greedy decisions depend on. Quantized, a tied head stays tied.
        shares_embedding = weight_dtype == dtype or quantization is not None
        self.lm_head_weight: Weight = (
            self.embed_weight
            if config.tie_word_embeddings and shares_embedding
            else parameter((self.vocab_part, config.hidden_size), dtype, device)
        )
        self.rotary = RotaryEmbedding(
            config.head_dim,
            config.rope_theta,
            config.rope_scaling,
            max_positions,
            dtype,
            device,
            max_position_embeddings=config.max_position_embeddings,
        )
        self.local_rotary = (  # Gemma 3's windowed layers: plain RoPE of their own theta
            None
            if config.local_rope_theta is None
            else RotaryEmbedding(
                config.head_dim, config.local_rope_theta, None, max_positions, dtype, device
            )
        )

    @torch.inference_mode()
    def load_weights(
        self, checkpoint: Checkpoint, prequantized: PrequantizedFormat | None = None
    ) -> None:
        """Copy in this rank's part of a Hugging Face checkpoint's tensors; ``prequantized``
        reads the linear layers of a checkpoint quantized in that format."""
        if prequantized is not None and self.config.mixture is not None:
            raise ValueError("pre-quantized mixture-of-experts checkpoints are not supported")
        loader = ShardLoader(checkpoint, self.group, prequantized)
        tied_head = self.lm_head_weight is self.embed_weight
        loader.load_matrix(self, "embed_weight", ["model.embed_tokens"], OUTPUT_DIM)
        if tied_head and self.lm_head_weight is not self.embed_weight:  # read quantized
            delattr(self, "lm_head_weight")
            self.lm_head_weight = self.embed_weight
        for index, layer in enumerate(self.layers):
            cast(DecoderLayer, layer).load(loader, f"model.layers.{index}")
            self._prepare_matrices(layer.modules())
        self.norm.load(loader, "model.norm.weight")
        tied = self.config.tie_word_embeddings
        head = "model.embed_tokens" if tied else "lm_head"
        if self.lm_head_weight is not self.embed_weight:
            if f"{head}.weight" not in checkpoint:
                raise ValueError("checkpoint has no lm_head.weight and does not tie embeddings")
            loader.load_matrix(self, "lm_head_weight", [head], OUTPUT_DIM)
        leftover = [
            name
            for name in checkpoint.unread()
            if "rotary_emb" not in name and not (tied and name == "lm_head.weight")
        ]
        if leftover:
            raise ValueError(f"checkpoint tensors not used by the model: {leftover[:5]}")
        self._prepare_matrices([self])

    def _prepare_matrices(self, modules: Iterable[nn.Module]) -> None:
        """Quantize the modules' own matrices, or lay them out once for the GEMM library or,
        read quantized from the checkpoint, for the quantized kernel."""
        prepared: dict[int, QuantizedMatrix | PanelMatrix] = {}  # a tied head stays tied
        for module in modules:
            for name, value in list(vars(module).items()):
                if isinstance(value, QuantizedMatrix):
                    if id(value) not in prepared:
                        prepared[id(value)] = prepare_quantized(value)
                    setattr(module, name, prepared[id(value)])
            for name, param in list(module.named_parameters(recurse=False)):
                if param.dim() != 2:
                    continue
                if self.quantization is not None:
                    matrix = prepare_quantized(self.quantization.quantize(param.data))
                    self._quantize(module, name, matrix)
                elif param is not self.embed_weight:  # looked up, not multiplied
                    packed = pack_weight(param.data)
                    setattr(module, name, nn.Parameter(packed, requires_grad=False))

    def _quantize(
        self, module: nn.Module, name: str, matrix: QuantizedMatrix | PanelMatrix
    ) -> None:
        """Put ``matrix`` in place of the parameter ``name`` (and of a head tied to it)."""
        tied_head = module is self and self.lm_head_weight is self.embed_weight
        delattr(module, name)
        setattr(module, name, matrix)
        if tied_head and name == "embed_weight":
            delattr(self, "lm_head_weight")
            self.lm_head_weight = matrix

    def weight_bytes(self) -> int:
        """Bytes this rank's weights take, quantized matrices at their stored size."""
        tensors = sum(p.numel() * p.element_size() for p in self.parameters())  # tied: once
        matrices = {
            id(value): value.nbytes
            for module in self.modules()
            for value in vars(module).values()
            if isinstance(value, QuantizedMatrix | PanelMatrix)
        }
        return tensors + sum(matrices.values())

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: torch.Tensor,
        batch: AttentionBatch,
    ) -> torch.Tensor:
        """Hidden states [tokens, hidden] after the final norm; K/V go into ``kv_caches``."""
        x = self._embed(input_ids)
        if self.embed_scale is not None:
            x.mul_(self.embed_scale)
        rotation = self.rotary.at(positions, batch)
        local_rotation = (
            rotation if self.local_rotary is None else self.local_rotary.at(positions, batch)
        )
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, local_rotation if layer.local_rope else rotation, kv_cache, batch)
        return self.norm(x)

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embedding rows; each rank looks up the ids of its vocabulary part, summed."""
        if self.group.size == 1:
            return self._embedding_rows(input_ids)
        local = input_ids - self.vocab_start
        outside = (local < 0) | (local >= self.vocab_part)
        rows = self._embedding_rows(local.masked_fill(outside, 0))
        return self.group.all_reduce(rows.masked_fill(outside[:, None], 0.0))

    def _embedding_rows(self, ids: torch.Tensor) -> torch.Tensor:
        dtype = self.activation_dtype
        if isinstance(self.embed_weight, QuantizedMatrix | PanelMatrix):
            return self.embed_weight.take_rows(ids, dtype)
        return F.embedding(ids, self.embed_weight).to(dtype)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits [rows, vocab]; every rank's vocabulary part gathered."""
        logits = self.group.all_gather(linear(hidden, self.lm_head_weight).float())
        logits = logits[:, : self.config.vocab_size]
        cap = self.config.final_logit_softcap
        return logits if cap is None else torch.tanh(logits / cap).mul_(cap)
