"""Runs the model for one scheduled step: packs the tokens, owns the KV cache tensor."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from prism.engine.attention import AttentionBatch, PrefillSpan
from prism.engine.config import EngineConfig
from prism.engine.llama import LlamaModel
from prism.engine.request import Request
from prism.engine.scheduler import ScheduledChunk
from prism.models import ModelConfig, load_state_dict

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on CUDA and fp32 on CPU (bf16 matmuls are slow on AVX2 CPUs)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}") from None


def available_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ModelRunner:
    """Owns the model weights and the KV cache; turns a step's chunks into logits."""

    def __init__(self, model_config: ModelConfig, weights_path: Path, config: EngineConfig) -> None:
        self.config = config
        self.block_size = config.block_size
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.weight_dtype = resolve_dtype(config.weight_dtype or config.dtype, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(config.num_threads or available_cpus())
        max_positions = config.max_model_len or model_config.max_position_embeddings
        self.model = LlamaModel(
            model_config, max_positions, self.dtype, self.device, self.weight_dtype
        )
        self.model.load_weights(load_state_dict(weights_path, self.dtype, self.device))
        self.num_blocks = self._count_kv_blocks(model_config)
        self.kv_caches = torch.zeros(
            (
                model_config.num_layers,
                2,
                model_config.num_kv_heads,
                self.num_blocks,
                self.block_size,
                model_config.head_dim,
            ),
            dtype=self.dtype,
            device=self.device,
        )

    def _count_kv_blocks(self, model_config: ModelConfig) -> int:
        if self.config.num_kv_blocks is not None:
            return self.config.num_kv_blocks
        per_block = (
            model_config.num_layers
            * 2
            * self.block_size
            * model_config.num_kv_heads
            * model_config.head_dim
            * torch.finfo(self.dtype).bits
            // 8
        )
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            free, _total = torch.cuda.mem_get_info(self.device)
            budget = int(free * self.config.gpu_memory_utilization)
        else:
            budget = self.config.kv_cache_bytes
        num_blocks = budget // per_block
        if num_blocks < 1:
            raise ValueError(f"a KV budget of {budget} bytes holds no {per_block}-byte block")
        return num_blocks

    @torch.inference_mode()
    def execute(self, chunks: list[ScheduledChunk]) -> tuple[torch.Tensor, list[Request]]:
        """Run one step; return logits [samplers, vocab] and the requests they belong to."""
        decodes = [chunk for chunk in chunks if chunk.num_tokens == 1]
        prefills = [chunk for chunk in chunks if chunk.num_tokens > 1]
        token_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample_rows: list[int] = []
        samplers: list[Request] = []
        spans: list[PrefillSpan] = []
        for chunk in decodes + prefills:
            request = chunk.request
            end = chunk.start + chunk.num_tokens
            if chunk.num_tokens > 1:
                spans.append(self._prefill_span(chunk, len(token_ids)))
            token_ids.extend(request.token_ids[chunk.start : end])
            positions.extend(range(chunk.start, end))
            blocks = request.block_ids
            size = self.block_size
            slots.extend(blocks[pos // size] * size + pos % size for pos in range(chunk.start, end))
            if chunk.samples:
                sample_rows.append(len(token_ids) - 1)
                samplers.append(request)
        batch = AttentionBatch(
            slot_mapping=self._tensor(slots),
            num_decodes=len(decodes),
            decode_block_tables=None,
            decode_mask=None,
            prefills=spans,
        )
        if decodes:
            batch.decode_block_tables, batch.decode_mask = self._decode_tables(decodes)
        hidden = self.model(self._tensor(token_ids), self._tensor(positions), self.kv_caches, batch)
        logits = self.model.compute_logits(hidden[self._tensor(sample_rows)])
        return logits, samplers

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def _decode_tables(self, decodes: list[ScheduledChunk]) -> tuple[torch.Tensor, torch.Tensor]:
        context_lens = [chunk.start + 1 for chunk in decodes]
        width = -(-max(context_lens) // self.block_size)
        tables = [
            chunk.request.block_ids[:width] + [0] * (width - len(chunk.request.block_ids[:width]))
            for chunk in decodes
        ]
        key_positions = torch.arange(width * self.block_size, device=self.device)
        mask = key_positions[None, :] < self._tensor(context_lens)[:, None]
        return self._tensor(tables), mask[:, None, None, :]

    def _prefill_span(self, chunk: ScheduledChunk, query_start: int) -> PrefillSpan:
        context_len = chunk.start + chunk.num_tokens
        num_blocks = -(-context_len // self.block_size)
        mask = None
        if chunk.start > 0:
            query_positions = torch.arange(chunk.start, context_len, device=self.device)
            key_positions = torch.arange(context_len, device=self.device)
            mask = key_positions[None, :] <= query_positions[:, None]
        return PrefillSpan(
            query_start=query_start,
            query_len=chunk.num_tokens,
            context_len=context_len,
            block_ids=self._tensor(chunk.request.block_ids[:num_blocks]),
            mask=mask,
        )
