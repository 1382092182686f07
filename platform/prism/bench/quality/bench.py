"""Score a fixed public-domain text with the model at each quantization, in Prism's engine.

The text is chapters I-III of Lewis Carroll's *Alice's Adventures in Wonderland* (Project
Gutenberg eBook #11, in the public domain), shipped beside this module. It is cut into
windows of ``window`` tokens, each scored from its own first token, so every mode sees the
same contexts. For each mode the report gives the perplexity over every scored token, and
the share of positions where its top-1 token equals the full-precision model's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from prism.bench.machine import Machine, describe_machine, use_threads
from prism.config import EngineSettings
from prism.engine import EngineConfig, LLMEngine
from prism.engine.model_runner import resolve_device
from prism.engine.scoring import TokenScores, score_tokens
from prism.models import load_tokenizer, resolve_model
from prism.models.prequantized.gguf import GGUF_SOURCE_LINK

logger = logging.getLogger(__name__)

TEXT_PATH = Path(__file__).with_name("alice-chapters-1-3.txt")
TEXT_NAME = "Alice's Adventures in Wonderland, chapters I-III (Project Gutenberg #11)"
REFERENCE_MODE = "none"


@dataclass(frozen=True, slots=True)
class ModeQuality:
    """One quantization's scores: ``agreement`` is None for the reference itself."""

    mode: str
    group_size: int | None
    weight_bytes: int
    perplexity: float
    agreement: float | None


@dataclass(frozen=True, slots=True)
class QualityResult:
    date: str
    machine: Machine
    model_id: str
    dtype: str
    text: str
    text_tokens: int
    window: int
    scored_tokens: int
    modes: list[ModeQuality]


def windows(token_ids: Sequence[int], window: int) -> list[list[int]]:
    """``token_ids`` cut into consecutive windows of ``window`` (the last may be shorter;
    one of a single token, which predicts nothing, is dropped)."""
    parts = [list(token_ids[i : i + window]) for i in range(0, len(token_ids), window)]
    return [part for part in parts if len(part) > 1]


def perplexity(logprobs: torch.Tensor) -> float:
    """exp of the mean negative log-likelihood per token."""
    return math.exp(-logprobs.double().mean().item())


def run_quality_bench(
    *,
    source: str | None,
    device: str,
    dtype: str,
    threads: int | None,
    modes: Sequence[str],
    group_size: int | None,
    window: int,
    progress: Callable[[str], None] = logger.info,
) -> QualityResult:
    """Score the text with the full-precision model, then with each of ``modes``."""
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    threads = use_threads(threads)
    torch_device = resolve_device(device)
    model = resolve_model(source)
    tokenizer = load_tokenizer(model.path)
    token_ids: list[int] = tokenizer(TEXT_PATH.read_text(encoding="utf-8"))["input_ids"]
    parts = windows(token_ids, window)
    reference: TokenScores | None = None
    results: list[ModeQuality] = []
    dtype_name = dtype
    if "gguf" in modes and not (model.path / GGUF_SOURCE_LINK).exists():
        progress(f"skipping gguf: {model.model_id} was not converted from a GGUF file")
        modes = [mode for mode in modes if mode != "gguf"]
    for mode in [REFERENCE_MODE, *(m for m in modes if m != REFERENCE_MODE)]:
        settings = EngineSettings.model_validate(
            {
                "device": str(torch_device),
                "dtype": dtype,
                "num_threads": threads,
                "quantization": mode,
                "quantization_group_size": None if mode == REFERENCE_MODE else group_size,
                "max_num_batched_tokens": window,
                "warmup": False,
            }
        )
        progress(f"scoring {len(token_ids)} tokens with quantization {mode}")
        with LLMEngine(model.model_id, model.path, EngineConfig(**settings.model_dump())) as engine:
            dtype_name = str(engine.runner.dtype).removeprefix("torch.")
            scores = _score_windows(engine, parts, window)
            spec = engine.runner.model.quantization
            results.append(
                ModeQuality(
                    mode=mode,
                    group_size=None if spec is None else spec.group_size,
                    weight_bytes=engine.runner.weight_bytes(),
                    perplexity=perplexity(scores.logprobs),
                    agreement=None if reference is None else _agreement(scores, reference),
                )
            )
        reference = reference or scores
    return QualityResult(
        date=started,
        machine=describe_machine(torch_device),
        model_id=model.model_id,
        dtype=dtype_name,
        text=TEXT_NAME,
        text_tokens=len(token_ids),
        window=window,
        scored_tokens=sum(len(part) - 1 for part in parts),
        modes=results,
    )


def _score_windows(engine: LLMEngine, parts: list[list[int]], window: int) -> TokenScores:
    scored = [score_tokens(engine, part, window) for part in parts]
    return TokenScores(
        torch.cat([s.logprobs for s in scored]), torch.cat([s.top_ids for s in scored])
    )


def _agreement(scores: TokenScores, reference: TokenScores) -> float:
    return (scores.top_ids == reference.top_ids).double().mean().item()
