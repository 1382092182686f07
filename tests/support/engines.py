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


def run_staggered(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Submit a few prompts per step, so requests join a batch that is already decoding."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    outputs: dict[str, list[int]] = {str(i): [] for i in range(len(prompts))}
    pending = list(enumerate(prompts))
    while pending or engine.has_unfinished_requests():
        for index, prompt in pending[:3]:
            engine.add_request(str(index), prompt, params)
        pending = pending[3:]
        for output in engine.step():
            outputs[output.request_id].extend(output.new_token_ids)
    return [outputs[str(i)] for i in range(len(prompts))]
