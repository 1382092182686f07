"""The Hugging Face baseline as a contender: ``generate`` on one static, left-padded batch.

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

from prism.bench.engine.results import PhaseRun, phase_run
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


class HFContender:
    """Loads the model with transformers on entry and times greedy ``generate`` calls."""

    def __init__(
        self,
        model_path: Path,
        pad_token_id: int,
        device: torch.device,
        dtype: torch.dtype,
        warmup: list[int],
        threads: int,
    ) -> None:
        """``threads``: this process's torch threads while HF runs (the whole budget)."""
        self._model_path = model_path
        self._pad_token_id = pad_token_id
        self._device = device
        self._dtype = dtype
        self._warmup = warmup
        self._threads = threads
        # Any: a causal LM class with ``generate``, which transformers' types cannot name.
        self._model: Any = None
        self.load_seconds = 0.0
        self.weight_bytes: int | None = None

    def __enter__(self) -> HFContender:
        started = time.perf_counter()
        model: Any = AutoModelForCausalLM.from_pretrained(self._model_path, dtype=self._dtype)
        self._model = model.to(self._device).eval()
        self.load_seconds = time.perf_counter() - started
        self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._model = None

    def warm_up(self) -> None:
        self.run([self._warmup], WARMUP_TOKENS)

    def run(self, prompts: list[list[int]], new_tokens: int) -> PhaseRun:
        """Every prompt in one ``generate`` call; each step's tokens arrive together."""
        if self._model is None:
            raise RuntimeError("the HF contender is not loaded")
        torch.set_num_threads(self._threads)
        input_ids, attention_mask = left_padded(prompts, self._pad_token_id, self._device)
        clock = _StepClock()
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        submitted = time.perf_counter()
        self._model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=self._pad_token_id,
            streamer=clock,
        )
        if len(clock.times) != new_tokens:
            raise RuntimeError(f"generate produced {len(clock.times)} steps, not {new_tokens}")
        return phase_run(
            submitted, [clock.times] * len(prompts), sum(len(prompt) for prompt in prompts), 0
        )
