"""The API key check that the HTTP middleware and the gRPC service share."""

from __future__ import annotations

import pytest

from prism.serving.auth import authorized

KEY = "s3cret-key"


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
    ],
)
def test_anything_but_the_bearer_key_is_refused_without_error(authorization: str | None) -> None:
    assert authorized(authorization, KEY) is False


def test_the_bearer_key_passes_in_any_case_of_the_scheme() -> None:
    assert authorized("Bearer s3cret-key", KEY)
    assert authorized("bearer  s3cret-key ", KEY)


def test_a_non_ascii_key_matches_itself() -> None:
    assert authorized("Bearer clé-é", "clé-é")
    assert not authorized("Bearer cle-e", "clé-é")


def test_without_a_key_everything_passes() -> None:
    assert authorized(None, None)
    assert authorized("Bearer anything", "")
