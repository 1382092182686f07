"""Platform configs for the tests that serve Prism: the shared shape, with what differs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from prism.config import PlatformConfig

Section = Mapping[str, object]


def model_settings(
    model_id: str, source: str | Path | None = None, *, engine: Section | None = None, **fields
) -> dict[str, object]:
    """One model's settings: an engine on one thread plus ``engine``, and ``fields`` as given.

    Without ``source`` the model is the platform's default one.
    """
    settings: dict[str, object] = {"id": model_id, "engine": {"num_threads": 1, **(engine or {})}}
    if source is not None:
        settings["source"] = str(source)
    return settings | fields


def quick_autoscaling(min_replicas: int, max_replicas: int, **settings: object) -> dict:
    """Autoscaling that reacts within seconds: replicas push their metrics twice a second."""
    return {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "metrics_push_interval_s": 0.5,
        **settings,
    }


def platform_config(
    *models: Section,
    http_port: int,
    redis_url: str,
    suite: str | None = None,
    http: Section | None = None,
    redis: Section | None = None,
    **sections: Section,
) -> PlatformConfig:
    """``models`` served over HTTP on ``http_port``, their prefix index in ``redis_url``.

    ``suite`` gives the tests' application Redis keys of its own (``prism-<suite>-tests``)
    and an API-key variable nobody sets, so its calls need no key. ``http`` and ``redis``
    add settings to those sections; ``sections`` are further sections (``router=...``).
    """
    http_section: dict[str, object] = {"port": http_port}
    redis_section: dict[str, object] = {"url": redis_url}
    if suite is not None:
        http_section["api_key_env"] = f"PRISM_{suite.upper()}_TESTS_NO_KEY"
        redis_section["key_prefix"] = f"prism-{suite}-tests"
    return PlatformConfig.model_validate(
        {
            "models": list(models),
            "http": http_section | dict(http or {}),
            "redis": redis_section | dict(redis or {}),
            **sections,
        }
    )
