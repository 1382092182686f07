"""Model health: which gRPC health service names a model, and what ``/health`` answers."""

from __future__ import annotations

import pytest

from prism.serving.grpc_service import model_of_service
from prism.serving.model_health import ModelHealth, health_report

LIVE = ModelHealth("org/live-model", 2)
DOWN = ModelHealth("down-model", 0)


@pytest.mark.parametrize(
    ("service", "model_id"),
    [
        ("prism.v1.Generation/down-model", "down-model"),
        ("prism.v1.Generation/org/live-model", "org/live-model"),
        ("prism.v1.Generation", None),
        ("prism.v1.Generation/", None),
        ("", None),
        ("down-model", None),
        ("other.Service/down-model", None),
    ],
)
def test_a_model_health_service_is_the_generation_service_slash_the_model_id(
    service: str, model_id: str | None
) -> None:
    assert model_of_service(service) == model_id


def test_health_is_ok_when_every_model_has_a_live_replica() -> None:
    status, body = health_report([LIVE])

    assert status == 200
    assert body == {
        "status": "ok",
        "models": [{"id": "org/live-model", "status": "available", "live_replicas": 2}],
    }


def test_health_is_degraded_but_200_while_any_model_is_available() -> None:
    status, body = health_report([LIVE, DOWN])

    assert status == 200
    assert body["status"] == "degraded"
    assert body["models"][1] == {"id": "down-model", "status": "unavailable", "live_replicas": 0}


def test_health_is_503_when_no_model_is_available() -> None:
    status, body = health_report([DOWN])

    assert status == 503
    assert body["status"] == "unavailable"
