"""API keys and their tenants: the keys file, and the check HTTP and gRPC share."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism.config import ConfigError
from prism.errors import Unauthorized
from prism.serving.auth import APIKeys, Tenant

KEY = "s3cret-key"
KEYS_FILE = """
- tenant: team-a
  key: key-of-a
- tenant: team-b
  key: key-of-b
  max_concurrent_requests: 2
"""


def keys_file(tmp_path: Path, text: str = KEYS_FILE) -> Path:
    path = tmp_path / "api-keys.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "s3cret-key",
        "Basic s3cret-key",
        "Bearer s3cret-kez",
        "Bearer clé-é",
        "Bearer \udcff\udcfe",  # undecodable header bytes, as surrogate escapes
        "Bearer s3cret-key\u00e9",
        "Bearer key-of-a",  # another key set's
    ],
)
def test_anything_but_the_bearer_key_is_refused_without_error(authorization: str | None) -> None:
    with pytest.raises(Unauthorized):
        APIKeys.of(KEY, None, None).authenticate(authorization)


def test_the_single_key_is_tenant_default_in_any_case_of_the_scheme() -> None:
    keys = APIKeys.of(KEY, None, 8)
    assert keys.authenticate("Bearer s3cret-key") == Tenant("default", 8)
    assert keys.authenticate("bearer  s3cret-key ") == Tenant("default", 8)


def test_a_non_ascii_key_matches_itself() -> None:
    keys = APIKeys.of("clé-é", None, None)
    assert keys.authenticate("Bearer clé-é") == Tenant("default")
    with pytest.raises(Unauthorized):
        keys.authenticate("Bearer cle-e")


def test_without_a_key_everything_passes_without_a_tenant() -> None:
    keys = APIKeys.of(None, None, 4)
    assert len(keys) == 0
    assert keys.authenticate(None) is None
    assert keys.authenticate("Bearer anything") is None


def test_each_key_of_the_keys_file_names_its_tenant_and_limit(tmp_path: Path) -> None:
    keys = APIKeys.of(KEY, keys_file(tmp_path), 8)

    assert len(keys) == 3
    assert keys.authenticate("Bearer key-of-a") == Tenant("team-a", 8)
    assert keys.authenticate("Bearer key-of-b") == Tenant("team-b", 2)
    assert keys.authenticate(f"Bearer {KEY}") == Tenant("default", 8)
    with pytest.raises(Unauthorized):
        keys.authenticate("Bearer key-of-c")


def test_a_json_keys_file_alone_is_enough(tmp_path: Path) -> None:
    path = keys_file(tmp_path, '[{"tenant": "solo", "key": "k"}]')
    keys = APIKeys.of(None, path, None)
    assert keys.authenticate("Bearer k") == Tenant("solo")
    with pytest.raises(Unauthorized):
        keys.authenticate(None)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("- {tenant: a, key: k}\n- {tenant: a, key: l}", "tenants named more than once: a"),
        ("- {tenant: default, key: k}", "tenants named more than once: default"),
        ("- {tenant: a, key: k}\n- {tenant: b, key: k}", "two tenants have the same key"),
        ("- {tenant: a, key: s3cret-key}", "two tenants have the same key"),
        ("- {tenant: 'a b', key: k}", "0.tenant: String should match pattern"),
        ("- {tenant: a, key: ''}", "0.key: String should have at least 1 character"),
        ("- {tenant: a, key: k, limit: 3}", "0.limit: Extra inputs are not permitted"),
        ("{a: k}", "Input should be a valid list"),
        ("- [unclosed", "not valid YAML or JSON"),
    ],
)
def test_a_bad_keys_file_is_a_config_error_without_its_keys(
    tmp_path: Path, text: str, error: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        APIKeys.of(KEY, keys_file(tmp_path, text), None)
    assert error in str(refused.value)
    assert "s3cret-key" not in str(refused.value)


def test_a_missing_keys_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        APIKeys.of(None, tmp_path / "nowhere.yaml", None)
