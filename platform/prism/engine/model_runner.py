"""Runs the model for one scheduled step: packs the tokens, owns the KV cache tensor."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from prism.engine.attention import AttentionBatch, PrefillSpan
from prism.engine.engine_config import EngineConfig
from prism.engine.llama import LlamaModel
from prism.engine.parallel import ParallelSetup, TensorParallelGroup, check_tensor_parallel
from prism.engine.quantization_plan import QuantizationPlan
from prism.engine.request import Request
from prism.engine.scheduler import ScheduledChunk
from prism.engine.step_input import PrefillInput, StepInput, packing_order
from prism.errors import EngineDead
from prism.models import Checkpoint, ModelConfig

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str, rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU.

    A rank that sees several GPUs and was given no index takes GPU ``rank`` (modulo the count).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    return device


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
    """Owns one rank's weights and KV cache; turns a step's chunks into logits.

    With tensor parallelism, rank 0's runner packs each step and broadcasts it; the other
    ranks' runners :meth:`follow` those steps. Each rank holds its share of the heads.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        weights_path: Path,
        config: EngineConfig,
        parallel: ParallelSetup | None = None,
    ) -> None:
        self.config = config
        self.block_size = config.block_size
        quantization = QuantizationPlan.for_model(
            config.quantization, config.quantization_group_size, weights_path
        )
        check_tensor_parallel(
            model_config,
            config.tensor_parallel_size,
            quantization.group_size(config.tensor_parallel_size),
        )
        self.device = resolve_device(config.device, parallel.rank if parallel else 0)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.weight_dtype = resolve_dtype(config.weight_dtype or config.dtype, self.device)
        if self.device.type == "cpu":
            per_rank = max(1, available_cpus() // config.tensor_parallel_size)
            torch.set_num_threads(config.num_threads or per_rank)
        self.group = self._join(parallel)
        try:
            max_positions = config.max_model_len or model_config.max_position_embeddings
            self.model = LlamaModel(
                model_config,
                max_positions,
                self.dtype,
                self.device,
                self.weight_dtype,
                self.group,
                quantization.at_load,
            )
            with Checkpoint(weights_path) as checkpoint:
                self.model.load_weights(checkpoint, quantization.stored)
            self.num_kv_heads = model_config.num_kv_heads // self.group.size
            self.num_blocks = self.group.min(self._count_kv_blocks(model_config))
            self.kv_caches = torch.zeros(
                (
                    model_config.num_layers,
                    2,
                    self.num_kv_heads,
                    self.num_blocks,
                    self.block_size,
                    model_config.head_dim,
                ),
                dtype=self.dtype,
                device=self.device,
            )
        except BaseException:  # a rank that fails to load leaves its group, so it can rejoin
            self.group.close()
            raise

    def _join(self, parallel: ParallelSetup | None) -> TensorParallelGroup:
        size = self.config.tensor_parallel_size
        if size == 1:
            return TensorParallelGroup(device=self.device)
        if parallel is None or parallel.world_size != size:
            raise ValueError(f"tensor_parallel_size {size} needs a ParallelSetup of {size} ranks")
        return TensorParallelGroup.join(parallel, self.device)

    def _count_kv_blocks(self, model_config: ModelConfig) -> int:
        if self.config.num_kv_blocks is not None:
            return self.config.num_kv_blocks
        per_block = (
            model_config.num_layers
            * 2
            * self.block_size
            * (model_config.num_kv_heads // self.group.size)
            * model_config.head_dim
            * torch.finfo(self.dtype).bits
            // 8
        )
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            free, _total = torch.cuda.mem_get_info(self.device)
            budget = int(free * self.config.gpu_memory_utilization)
        else:
            budget = self.config.kv_cache_bytes // self.group.size
        num_blocks = budget // per_block
        if num_blocks < 1:
            raise ValueError(f"a KV budget of {budget} bytes holds no {per_block}-byte block")
        return num_blocks

    def weight_bytes(self) -> int:
        """Bytes of weights across the group (this rank's, times the equal-sized ranks)."""
        return self.model.weight_bytes() * self.group.size

    def execute(self, chunks: list[ScheduledChunk]) -> tuple[torch.Tensor, list[Request]]:
        """Run one step (rank 0); return logits [samplers, vocab] and their requests.

        With tensor parallelism, a failure once the step is broadcast leaves the other ranks
        in the middle of it: the group is out of step, and :class:`EngineDead` says so.
        """
        step = StepInput.build(chunks, self.block_size)
        samplers = [chunk.request for chunk in packing_order(chunks) if chunk.samples]
        return self.run_step(step), samplers

    def run_step(self, step: StepInput) -> torch.Tensor:
        """Run a packed step on every rank (rank 0); return the logits of its sample rows."""
        if self.group.size == 1:
            return self.forward(step)
        self.group.broadcast(step.pack())
        try:
            return self.forward(step)
        except EngineDead:
            raise
        except Exception as error:
            self.group.broken = True
            raise EngineDead(
                "rank 0 failed in the middle of a step: its tensor-parallel ranks are out of step"
            ) from error

    def follow(self) -> None:
        """Run the steps rank 0 broadcasts until it stops the group (ranks beyond 0)."""
        while (values := self.group.receive()) is not None:
            self.forward(StepInput.unpack(values))

    def close(self) -> None:
        """Rank 0: tell the other ranks to stop; every rank: leave the group."""
        try:
            if self.group.rank == 0 and not self.group.broken:
                self.group.broadcast(None)
        finally:
            self.group.close()

    @torch.inference_mode()
    def forward(self, step: StepInput) -> torch.Tensor:
        """Logits [sampling rows, vocab] of one packed step; K/V go into the cache."""
        batch = AttentionBatch(
            slot_mapping=self._tensor(step.slots),
            num_decodes=step.num_decodes,
            decode_block_tables=None,
            decode_context_lens=None,
            prefills=[self._prefill_span(prefill) for prefill in step.prefills],
        )
        if step.num_decodes:
            batch.decode_block_tables = self._tensor(step.decode_tables)
            batch.decode_context_lens = self._tensor(step.decode_context_lens)
        hidden = self.model(
            self._tensor(step.token_ids), self._tensor(step.positions), self.kv_caches, batch
        )
        return self.model.compute_logits(hidden[self._tensor(step.sample_rows)])

    def _tensor(self, values: list[int] | list[list[int]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def _prefill_span(self, prefill: PrefillInput) -> PrefillSpan:
        return PrefillSpan(
            query_start=prefill.query_start,
            query_len=prefill.query_len,
            context_len=prefill.context_len,
            block_ids=self._tensor(prefill.block_ids),
        )
