"""Measure the Hugging Face baseline: ``generate`` on one static, left-padded batch.

A streamer timestamps every decoding step, so HF's time to first token, time per output
token and inter-token latency come from the same ``generate`` call as its throughput, and
are derived exactly as Prism's are.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM
from transformers.generation.streamers import BaseStreamer

from prism.bench.engine.results import EngineRun, PhaseRun, phase_run
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


class _StepClock(BaseStreamer):
    """Records when each decoding step's tokens reach the host (the prompt's put is skipped)."""

    def __init__(self) -> None:
        self.prompt_seen = False
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:
            self.times.append(time.perf_counter())
        self.prompt_seen = True

    def end(self) -> None:
        """Nothing to flush: the times are read after ``generate`` returns."""


class _Generator:
    """Times greedy ``generate`` calls that produce exactly ``new_tokens`` per prompt."""

    def __init__(self, model: Any, pad_token_id: int, device: torch.device) -> None:
        # Any: a causal LM class with ``generate``, which transformers' types cannot name.
        self.model = model
        self.pad_token_id = pad_token_id
        self.device = device

    def run(self, prompts: list[list[int]], new_tokens: int) -> PhaseRun:
        """Every prompt in one ``generate`` call; each step's tokens arrive together."""
        input_ids, attention_mask = left_padded(prompts, self.pad_token_id, self.device)
        clock = _StepClock()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        submitted = time.perf_counter()
        self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=self.pad_token_id,
            streamer=clock,
        )
        if len(clock.times) != new_tokens:
            raise RuntimeError(f"generate produced {len(clock.times)} steps, not {new_tokens}")
        return phase_run(
            submitted, [clock.times] * len(prompts), sum(len(prompt) for prompt in prompts), 0
        )


def measure_hf(
    model_path: Path,
    prompts: list[list[int]],
    warmup: list[int],
    output_tokens: int,
    pad_token_id: int,
    device: torch.device,
    dtype: torch.dtype,
    long_prompt: list[int],
    repeats: int,
) -> EngineRun:
    """Load the model with transformers and time the same runs as Prism's, in the same order."""
    single, batch, prefill = [], [], []
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        model = model.to(device).eval()
        load_seconds = time.perf_counter() - started
        generator = _Generator(model, pad_token_id, device)
        generator.run([warmup], WARMUP_TOKENS)
        for _ in range(repeats):
            single.append(generator.run(prompts[:1], output_tokens))
            batch.append(generator.run(prompts, output_tokens))
            prefill.append(generator.run([long_prompt], 1))
    return EngineRun(load_seconds, single, batch, prefill, memory.use)
