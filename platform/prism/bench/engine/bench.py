"""The engine benchmark: Prism's engine and the HF ``generate`` baseline, same conditions.

Both are loaded in this process at once and run the same prompts on the same device, dtype
and torch thread budget, their runs interleaved phase by phase (:mod:`.rounds`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TypeVar

import torch
from transformers import PreTrainedTokenizerBase

from prism.bench.engine.hf_baseline import HFContender
from prism.bench.engine.prism_runs import PrismContender
from prism.bench.engine.results import EngineBenchResult
from prism.bench.engine.rounds import Contender, PhaseWork, run_interleaved
from prism.bench.engine.workload import Workload
from prism.bench.machine import describe_machine, use_threads
from prism.bench.memory import MemoryUse, PeakMemory
from prism.config import EngineSettings
from prism.engine import EngineConfig
from prism.engine.model_runner import resolve_device, resolve_dtype
from prism.errors import ModelNotFound
from prism.models import load_tokenizer, resolve_model

logger = logging.getLogger(__name__)

_Loadable = TypeVar("_Loadable", bound=AbstractContextManager)


def run_engine_bench(
    workload: Workload,
    *,
    source: str | None,
    device: str,
    dtype: str,
    weight_dtype: str | None,
    threads: int | None,
    quantization: str = "none",
    quantization_group_size: int | None = None,
    tensor_parallel_size: int,
    repeats: int = 3,
    with_hf: bool = True,
    progress: Callable[[str], None] = logger.info,
) -> EngineBenchResult:
    """Run ``workload`` on Prism's engine and, unless ``with_hf`` is False, on HF ``generate``.

    Each phase runs ``repeats`` times on each engine. ``threads`` (default: the CPUs this
    process may use) is the budget of both engines: HF runs on all of them, and with
    ``tensor_parallel_size`` N Prism runs as N local ranks sharing them. ``weight_dtype``
    stores Prism's matrices in another dtype (a mixed-precision extra; the baseline stays in
    ``dtype``); ``quantization`` (``int8``, ``int4``) quantizes them, weight-only, with
    ``quantization_group_size`` columns per scale. ``progress`` hears of each phase.
    """
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    threads = use_threads(threads)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    dtype_name = str(torch_dtype).removeprefix("torch.")
    progress("loading the model")
    model = resolve_model(source)
    tokenizer = load_tokenizer(model.path)
    prompts = workload.prompt_token_ids(tokenizer)
    warmup = workload.warmup_token_ids(tokenizer)
    long_prompt = workload.prefill_token_ids(tokenizer)
    rank_threads = max(1, threads // tensor_parallel_size)
    config = bench_engine_config(
        workload,
        device=str(torch_device),
        dtype=dtype_name,
        weight_dtype=weight_dtype,
        quantization=quantization,
        quantization_group_size=quantization_group_size,
        num_threads=rank_threads,
        tensor_parallel_size=tensor_parallel_size,
    )
    weights = f", {weight_dtype} weights" if weight_dtype else ""
    if quantization != "none":
        weights += f", {quantization} weight-only quantization"
    progress(
        f"Prism engine: {workload.num_requests} requests x {workload.output_tokens} tokens, "
        f"{dtype_name}{weights} on {torch_device}, {threads} threads, "
        f"{tensor_parallel_size} ranks, {repeats} rounds"
    )
    phases = [
        PhaseWork("single", prompts[:1], workload.output_tokens),
        PhaseWork("batch", prompts, workload.output_tokens),
        PhaseWork("prefill", [long_prompt], 1),
    ]
    with contextlib.ExitStack() as stack:
        contenders: list[tuple[Contender, MemoryUse]] = []
        prism_contender = PrismContender(
            model, tokenizer, config, workload.sampling_params(), warmup, rank_threads
        )
        contenders.append(_load(stack, prism_contender, torch_device))
        if with_hf:
            progress(
                f"HF transformers generate: the same runs, one static batch, {threads} threads"
            )
            pad_token_id = _pad_token_id(tokenizer, model.model_id)
            hf_contender = HFContender(
                model.path, pad_token_id, torch_device, torch_dtype, warmup, threads
            )
            contenders.append(_load(stack, hf_contender, torch_device))
        runs = run_interleaved(contenders, phases, repeats, torch_device, progress)
    return EngineBenchResult(
        date=started,
        machine=describe_machine(torch_device),
        model_id=model.model_id,
        dtype=dtype_name,
        prism_weight_dtype=weight_dtype or dtype_name,
        prism_threads=rank_threads * tensor_parallel_size,
        hf_threads=threads if with_hf else None,
        workload=workload,
        prompt_tokens=[len(prompt) for prompt in prompts],
        prism=runs[0],
        hf=runs[1] if with_hf else None,
        prism_quantization=quantization,
    )


def bench_engine_config(workload: Workload, **settings: object) -> EngineConfig:
    """A benchmark's engine: room for the workload's whole batch, and ``settings``."""
    validated = EngineSettings.model_validate({"max_num_seqs": workload.num_requests, **settings})
    return EngineConfig(**validated.model_dump())


def _load(
    stack: contextlib.ExitStack, contender: _Loadable, device: torch.device
) -> tuple[_Loadable, MemoryUse]:
    """Enter ``contender`` (it loads its model) and measure the memory that added."""
    with PeakMemory(device) as memory:
        stack.enter_context(contender)
    return contender, memory.use


def _pad_token_id(tokenizer: PreTrainedTokenizerBase, model_id: str) -> int:
    """The id HF pads its batch with: the tokenizer's pad token, else its EOS token."""
    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = tokenizer.eos_token_id
    if not isinstance(pad_token_id, int):
        raise ModelNotFound(f"{model_id}: the tokenizer names no pad or EOS token")
    return pad_token_id
