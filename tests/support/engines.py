"""Engine configs for tests: the platform's engine defaults with a few fields changed."""

from __future__ import annotations

from prism.config import EngineSettings
from prism.engine import EngineConfig, LLMEngine, SamplingParams


def engine_config(**overrides: object) -> EngineConfig:
    """``EngineConfig`` from :class:`EngineSettings` defaults, validated, plus ``overrides``."""
    return EngineConfig(**EngineSettings.model_validate(overrides).model_dump())


def generate_alone(
    engine: LLMEngine, request_id: str, prompt: list[int], params: SamplingParams
) -> list[int]:
    """Run one request on an otherwise idle engine to its end; its output token ids."""
    engine.add_request(request_id, prompt, params)
    tokens: list[int] = []
    while engine.has_unfinished_requests():
        for output in engine.step():
            tokens.extend(output.new_token_ids)
    return tokens
