"""Prism's inference engine: continuous batching over a paged KV cache (no Ray here)."""

from prism.engine.async_engine import AsyncEngine
from prism.engine.config import EngineConfig
from prism.engine.kv_events import (
    AllBlocksCleared,
    BlocksRemoved,
    BlocksStored,
    KVEvent,
    KVEventsDropped,
)
from prism.engine.llm_engine import EngineStats, LLMEngine
from prism.engine.request import FinishReason, RequestOutput, TokenLogprob
from prism.engine.sampling_params import SamplingParams

__all__ = [
    "AllBlocksCleared",
    "AsyncEngine",
    "BlocksRemoved",
    "BlocksStored",
    "EngineConfig",
    "EngineStats",
    "FinishReason",
    "KVEvent",
    "KVEventsDropped",
    "LLMEngine",
    "RequestOutput",
    "SamplingParams",
    "TokenLogprob",
]
