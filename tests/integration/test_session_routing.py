"""The ``session`` policy through Serve: one home replica per session id."""

from __future__ import annotations

import random

from support.routing_platform import RoutingPlatform, random_tokens


def test_each_session_stays_on_its_home_replica(session_platform: RoutingPlatform) -> None:
    rng = random.Random(7)
    homes = {}
    for session in (f"user-{n}" for n in range(8)):
        served = {
            session_platform.complete(random_tokens(40, rng), session_id=session).replica
            for _ in range(4)
        }
        assert len(served) == 1, f"{session} moved between {served}"
        homes[session] = served.pop()

    assert len(set(homes.values())) > 1  # sessions spread over the replicas
    assert session_platform.complete(random_tokens(40, rng)).predicted_cached_tokens is None
