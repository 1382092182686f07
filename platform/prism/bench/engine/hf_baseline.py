"""Measure the Hugging Face baseline: ``generate`` on one static, left-padded batch.

``generate`` reports no per-token times, so the time to first token is a 1-token
``generate`` of the same prompts, and the decode time is the full run minus that.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from prism.bench.engine.results import BatchRun, EngineRun, SingleRun
from prism.bench.memory import PeakMemory
from prism.bench.prompts import WARMUP_TOKENS


def left_padded(
    prompts: list[list[int]], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask of ``prompts`` padded on the left to one width."""
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Generator:
    """Times greedy ``generate`` calls that produce exactly ``new_tokens`` per prompt."""

    def __init__(self, model: Any, pad_token_id: int, device: torch.device) -> None:
        # Any: a causal LM class with ``generate``, which transformers' types cannot name.
        self.model = model
        self.pad_token_id = pad_token_id
        self.device = device

    def run(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, int]:
        """Seconds taken and output tokens produced."""
        input_ids, attention_mask = left_padded(prompts, self.pad_token_id, self.device)
        _synchronize(self.device)
        started = time.perf_counter()
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=self.pad_token_id,
        )
        _synchronize(self.device)
        seconds = time.perf_counter() - started
        return seconds, output.shape[0] * (output.shape[1] - input_ids.shape[1])

    @torch.inference_mode()
    def forward(self, prompt: list[int]) -> float:
        """Seconds for one forward pass over ``prompt``."""
        input_ids = torch.tensor([prompt], device=self.device)
        _synchronize(self.device)
        started = time.perf_counter()
        self.model(input_ids=input_ids)
        _synchronize(self.device)
        return time.perf_counter() - started


def measure_hf(
    model_path: Path,
    prompts: list[list[int]],
    warmup: list[int],
    output_tokens: int,
    pad_token_id: int,
    device: torch.device,
    dtype: torch.dtype,
    long_prompt: list[int],
) -> EngineRun:
    """Load the model with transformers and time the same single and batch runs as Prism's."""
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        model = model.to(device).eval()
        load_seconds = time.perf_counter() - started
        generator = _Generator(model, pad_token_id, device)
        generator.run([warmup], WARMUP_TOKENS)
        single_first, _ = generator.run(prompts[:1], 1)
        single_all, single_tokens = generator.run(prompts[:1], output_tokens)
        batch_first, _ = generator.run(prompts, 1)
        batch_all, batch_tokens = generator.run(prompts, output_tokens)
        prefill_seconds = generator.forward(long_prompt)
    return EngineRun(
        load_seconds=load_seconds,
        batch=BatchRun(
            num_requests=len(prompts),
            output_tokens=batch_tokens,
            seconds=batch_all,
            ttft_mean_seconds=batch_first,
        ),
        single=SingleRun(
            output_tokens=single_tokens,
            ttft_seconds=single_first,
            decode_seconds=single_all - single_first,
        ),
        prefill_seconds=prefill_seconds,
        memory=memory.use,
    )
