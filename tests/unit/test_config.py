"""Deployment profiles load into a validated platform config; errors name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from prism.config import (
    DEFAULT_PROFILE,
    ConfigError,
    GRPCSettings,
    PlatformConfig,
    grpc_exposable,
    load_config,
    redact_url,
    with_password,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def test_default_profile_is_two_cpu_replicas_of_smollm2() -> None:
    config = load_config(DEFAULT_PROFILE)
    [model] = config.models
    assert model.id == "smollm2-135m-instruct" and model.source is None
    assert model.replicas == 2
    engine = model.engine
    assert engine.device == "cpu" and engine.dtype == "float32"
    assert engine.kv_cache_bytes == 512 << 20


def test_sizes_accept_units(tmp_path: Path) -> None:
    path = write(tmp_path, "models: [{id: m, engine: {kv_cache_bytes: 1.5GiB}}]")
    assert load_config(path).models[0].engine.kv_cache_bytes == 3 << 29


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("models: [{id: m, engine: {block_size: 0}}]", "models.0.engine.block_size"),
        ("models: [{id: m, engine: {kv_cache_bytes: lots}}]", "models.0.engine.kv_cache_bytes"),
        ("models: [{id: m, replica: 2}]", "models.0.replica"),
        ("models: []", "models"),
        ("models: [{id: a}, {id: a}]", "model ids must be unique"),
        ("models: [{id: m}]\nhttp: {port: 99999}", "http.port"),
        (
            "models: [{id: m, autoscaling: {min_replicas: 3, max_replicas: 2}}]",
            "min_replicas must not exceed",
        ),
        ("models: [{id: m, engine: {tensor_parallel_size: 0}}]", "tensor_parallel_size"),
        (
            "models: [{id: m, engine: {tensor_parallel_size: 2}, resources: {num_gpus: 0.5}}]",
            "each rank needs whole GPUs (num_gpus is 0.5)",
        ),
        (
            "models: [{id: m, engine: {tensor_parallel_size: 2}, resources: {num_cpus: 0}}]",
            "each rank must reserve a CPU or GPU",
        ),
    ],
)
def test_invalid_profiles_name_the_file_and_field(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(path) in str(refused.value) and where in str(refused.value)


def test_unreadable_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "models: [unclosed"))


def test_every_shipped_profile_validates() -> None:
    for profile in DEFAULT_PROFILE.parent.glob("*.yaml"):
        assert isinstance(load_config(profile), PlatformConfig)


def test_urls_are_printed_without_their_password() -> None:
    url = with_password("redis://10.0.0.5:6379/0", "p@ss/word")
    assert redis.Redis.from_url(url).connection_pool.connection_kwargs["password"] == "p@ss/word"
    assert redact_url(url) == "redis://:***@10.0.0.5:6379/0"
    assert redact_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert redact_url("redis://host:1/0") == "redis://host:1/0"


def test_grpc_without_a_key_needs_an_explicit_yes() -> None:
    assert not grpc_exposable(GRPCSettings(), api_key_set=False)
    assert grpc_exposable(GRPCSettings(), api_key_set=True)
    assert grpc_exposable(GRPCSettings(allow_unauthenticated=True), api_key_set=False)
