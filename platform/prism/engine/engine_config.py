"""Engine settings: how big the batch and the KV cache are, and where the model runs."""

from __future__ import annotations

from dataclasses import dataclass

from prism.models.quantized import QuantizationSpec


@dataclass(slots=True, kw_only=True)
class EngineConfig:
    """Settings of one engine instance.

    Every field is required: the defaults are declared once, by the platform config's
    ``EngineSettings``, and ``EngineConfig(**EngineSettings(...).model_dump())`` builds one.

    ``kv_cache_bytes`` sizes the KV cache on CPU; on CUDA the cache takes
    ``gpu_memory_utilization`` of the device memory left free after the weights load.
    ``num_kv_blocks`` overrides both (tests use it to force preemption).
    ``tensor_parallel_size`` ranks split each layer's heads and MLP (and the vocabulary);
    ``kv_cache_bytes`` is then the budget of all ranks together.
    ``weight_dtype`` (None: as ``dtype``) stores the matrices in another dtype: on a CPU with
    native bf16 (AVX512-BF16, AMX), ``dtype="float32", weight_dtype="bfloat16"`` runs the
    matrix products in bf16 and everything else (norms, attention, KV cache) in fp32.
    ``quantization`` (``none``, ``int8``, ``int4``) quantizes the matrices at load, with
    ``quantization_group_size`` columns per scale (None: the mode's default); see
    ``prism.models.quantized``.
    ``step_timeout_s``: a step running longer marks the engine dead (:class:`AsyncEngine`).
    ``fault_injection`` lets ``inject_step_fault`` fail the next step (chaos tests only).
    ``warmup``: the serving layer runs :meth:`LLMEngine.warm_up` before a replica is ready.
    """

    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int | None
    enable_prefix_caching: bool
    device: str
    dtype: str
    weight_dtype: str | None
    quantization: str
    quantization_group_size: int | None
    kv_cache_bytes: int
    gpu_memory_utilization: float
    num_kv_blocks: int | None
    num_threads: int | None
    seed: int
    tensor_parallel_size: int
    step_timeout_s: float
    fault_injection: bool
    warmup: bool

    def __post_init__(self) -> None:
        sizes = ("block_size", "max_num_seqs", "max_num_batched_tokens", "tensor_parallel_size")
        for name in sizes:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError("num_kv_blocks must be at least 1")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        QuantizationSpec.for_mode(self.quantization, self.quantization_group_size)
        if self.step_timeout_s <= 0:
            raise ValueError("step_timeout_s must be positive")
