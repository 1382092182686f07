"""Prism's inference engine: continuous batching over a paged KV cache (no Ray here).

The request and output types it shares with its callers live outside the engine
(:mod:`prism.sampling_params`, :mod:`prism.outputs`, :mod:`prism.engine_stats`), so the
ingress can use them without loading the engine; they are re-exported here for engine users.
"""

from prism.engine.async_engine import AsyncEngine
from prism.engine.engine_config import EngineConfig
from prism.engine.llm_engine import LLMEngine
from prism.engine_stats import EngineStats
from prism.outputs import FinishReason, RequestOutput, TokenLogprob
from prism.sampling_params import SamplingParams

__all__ = [
    "AsyncEngine",
    "EngineConfig",
    "EngineStats",
    "FinishReason",
    "LLMEngine",
    "RequestOutput",
    "SamplingParams",
    "TokenLogprob",
]
