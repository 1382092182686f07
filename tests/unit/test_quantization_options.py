"""The quantization settings: validated in the config and the engine, set from the CLI."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from prism.cli import build_parser
from prism.cli.engine_options import engine_config
from prism.cli.serve import _serve_config
from prism.config import DEFAULT_PROFILE, EngineSettings, load_config
from support import engines


def test_serve_quantizes_every_model_of_the_profile_when_asked() -> None:
    args = build_parser().parse_args(["serve", "--quantization", "int4"])

    config = _serve_config(args)

    assert [model.engine.quantization for model in config.models] == ["int4"]


def test_serve_keeps_the_profiles_precision_by_default() -> None:
    config = _serve_config(build_parser().parse_args(["serve"]))

    assert [model.engine.quantization for model in config.models] == ["int8"]
    assert config.models == load_config(DEFAULT_PROFILE).models


def test_generate_passes_the_quantization_and_group_size_to_the_engine() -> None:
    args = build_parser().parse_args(
        ["generate", "--quantization", "int4", "--quantization-group-size", "64", "hi"]
    )

    config = engine_config(args)

    assert (config.quantization, config.quantization_group_size) == ("int4", 64)


def test_unknown_modes_are_refused_by_the_config() -> None:
    with pytest.raises(ValidationError, match="quantization"):
        EngineSettings.model_validate({"quantization": "int3"})


def test_int4_groups_that_are_not_multiples_of_32_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        engines.engine_config(quantization="int4", quantization_group_size=48)
