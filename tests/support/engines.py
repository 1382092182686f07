"""Engine configs for tests: the platform's engine defaults with a few fields changed."""

from __future__ import annotations

from prism.config import EngineSettings
from prism.engine import EngineConfig


def engine_config(**overrides: object) -> EngineConfig:
    """``EngineConfig`` from :class:`EngineSettings` defaults, validated, plus ``overrides``."""
    return EngineConfig(**EngineSettings.model_validate(overrides).model_dump())
