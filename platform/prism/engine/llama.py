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
from prism.engine.matmul import Weight, linear, pack_weight, prepare_quantized
from prism.engine.parallel import TensorParallelGroup
from prism.engine.quantized_panels import PanelMatrix
from prism.engine.rotary import RotaryEmbedding, Rotation
from prism.models import Checkpoint, ModelConfig, Shard
from prism.models.prequantized import PrequantizedFormat
from prism.models.quantized import QuantizationSpec, QuantizedMatrix, stack_rows

OUTPUT_DIM = 0
"""A weight's output-feature dimension (its rows): column-parallel layers split it."""
INPUT_DIM = 1
"""A weight's input-feature dimension (its columns): row-parallel layers split it."""


def _param(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


def _row_parallel(
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


class _Loader:
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
    def __init__(self, size: int, eps: float, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.weight = _param((size,), dtype, device)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized in fp32, rounded to ``x``'s dtype, then scaled (the order HF uses)."""
        return F.rms_norm(x, (x.shape[-1],), eps=self.eps).mul_(self.weight)


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
        self.qkv_weight = _param((q_size + 2 * kv_size, config.hidden_size), weight_dtype, device)
        self.qkv_bias = (
            _param((q_size + 2 * kv_size,), weight_dtype, device) if config.attention_bias else None
        )
        self.o_weight = _param((config.hidden_size, q_size), weight_dtype, device)
        self.o_bias: nn.Parameter | None = None
        self.q_norm = self.k_norm = None
        if config.qk_norm:  # one weight per head dimension, shared by the heads of every rank
            self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps, dtype, device)
            self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps, dtype, device)

    def load(self, loader: _Loader, prefix: str) -> None:
        names = ("q_proj", "k_proj", "v_proj")
        loader.load_matrix(self, "qkv_weight", [f"{prefix}.{n}" for n in names], OUTPUT_DIM)
        if self.qkv_bias is not None:
            loader.fill_fused(self.qkv_bias, [f"{prefix}.{n}.bias" for n in names])
        if f"{prefix}.o_proj.bias" in loader.checkpoint:  # before o_weight may be quantized
            o_bias = loader.read(f"{prefix}.o_proj.bias", cast(torch.Tensor, self.o_weight))
            self.o_bias = nn.Parameter(o_bias, requires_grad=False)
        loader.load_matrix(self, "o_weight", [f"{prefix}.o_proj"], INPUT_DIM)
        if self.q_norm is not None and self.k_norm is not None:
            loader.fill(self.q_norm.weight, f"{prefix}.q_norm.weight")
            loader.fill(self.k_norm.weight, f"{prefix}.k_norm.weight")

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
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        k_cache, v_cache = kv_cache[0], kv_cache[1]
        write_kv(k_cache, v_cache, k, v, batch.slot_mapping)
        out = paged_attention(q, k_cache, v_cache, batch, self.window)
        return _row_parallel(out.reshape(x.shape[0], -1), self.o_weight, self.o_bias, self.group)


class MLP(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        dtype: torch.dtype,
        device: torch.device,
        group: TensorParallelGroup,
    ) -> None:
        super().__init__()
        self.group = group
        size = config.intermediate_size // group.size
        self.gate_up_weight = _param((2 * size, config.hidden_size), dtype, device)
        self.down_weight = _param((config.hidden_size, size), dtype, device)

    def load(self, loader: _Loader, prefix: str) -> None:
        names = [f"{prefix}.gate_proj", f"{prefix}.up_proj"]
        loader.load_matrix(self, "gate_up_weight", names, OUTPUT_DIM)
        loader.load_matrix(self, "down_weight", [f"{prefix}.down_proj"], INPUT_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = linear(x, self.gate_up_weight).chunk(2, dim=-1)
        return _row_parallel(F.silu(gate).mul_(up), self.down_weight, None, self.group)


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
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        window = config.layer_windows[layer_index] if config.layer_windows else None
        self.attention = Attention(config, dtype, weight_dtype, device, group, window)
        self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        self.mlp = MLP(config, weight_dtype, device, group)

    def load(self, loader: _Loader, prefix: str) -> None:
        loader.fill(self.input_norm.weight, f"{prefix}.input_layernorm.weight")
        self.attention.load(loader, f"{prefix}.self_attn")
        loader.fill(self.post_attention_norm.weight, f"{prefix}.post_attention_layernorm.weight")
        self.mlp.load(loader, f"{prefix}.mlp")

    def forward(
        self,
        x: torch.Tensor,
        rotation: Rotation,
        kv_cache: torch.Tensor,
        batch: AttentionBatch,
    ) -> torch.Tensor:
        # The residual stream is this step's own tensor: added to in place.
        x.add_(self.attention(self.input_norm(x), rotation, kv_cache, batch))
        return x.add_(self.mlp(self.post_attention_norm(x)))


class LlamaModel(nn.Module):
    """A Llama/Mistral/Qwen2 decoder whose attention reads and writes a paged KV cache.

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
        self.config = config
        self.quantization = quantization
        self.group = group or TensorParallelGroup(device=device)
        self.vocab_part = -(-config.vocab_size // self.group.size)
        self.vocab_start = self.group.rank * self.vocab_part
        weight_dtype = weight_dtype or dtype
        self.embed_weight: Weight = _param(
            (self.vocab_part, config.hidden_size), weight_dtype, device
        )
        self.layers = nn.ModuleList(
            DecoderLayer(config, dtype, weight_dtype, device, self.group, index)
            for index in range(config.num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype, device)
        # The LM head stays in the activations' dtype: bf16 logits would round away the
        # margins that greedy decisions depend on. Quantized, a tied head stays tied.
        shares_embedding = weight_dtype == dtype or quantization is not None
        self.lm_head_weight: Weight = (
            self.embed_weight
            if config.tie_word_embeddings and shares_embedding
            else _param((self.vocab_part, config.hidden_size), dtype, device)
        )
        self.rotary = RotaryEmbedding(
            config.head_dim, config.rope_theta, config.rope_scaling, max_positions, dtype, device
        )

    @torch.inference_mode()
    def load_weights(
        self, checkpoint: Checkpoint, prequantized: PrequantizedFormat | None = None
    ) -> None:
        """Copy in this rank's part of a Hugging Face checkpoint's tensors; ``prequantized``
        reads the linear layers of a checkpoint quantized in that format."""
        loader = _Loader(checkpoint, self.group, prequantized)
        tied_head = self.lm_head_weight is self.embed_weight
        loader.load_matrix(self, "embed_weight", ["model.embed_tokens"], OUTPUT_DIM)
        if tied_head and self.lm_head_weight is not self.embed_weight:  # read quantized
            delattr(self, "lm_head_weight")
            self.lm_head_weight = self.embed_weight
        for index, layer in enumerate(self.layers):
            cast(DecoderLayer, layer).load(loader, f"model.layers.{index}")
            self._prepare_matrices(layer.modules())
        loader.fill(self.norm.weight, "model.norm.weight")
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
        rotation = self.rotary.at(positions)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, rotation, kv_cache, batch)
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
        dtype = self.rotary.cos.dtype
        if isinstance(self.embed_weight, QuantizedMatrix | PanelMatrix):
            return self.embed_weight.take_rows(ids, dtype)
        return F.embedding(ids, self.embed_weight).to(dtype)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits [rows, vocab]; every rank's vocabulary part gathered."""
        logits = self.group.all_gather(linear(hidden, self.lm_head_weight).float())
        return logits[:, : self.config.vocab_size]
