"""The embedded index ``prism serve`` starts: where it listens, and that it needs its password."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import ray
import redis

from prism.config import parse_config
from prism.launcher import start_index

CONFIG = parse_config({"models": [{"id": "m"}]}, "test")


@pytest.mark.parametrize("joined", [False, True])
def test_the_index_listens_where_the_replicas_reach_it_and_needs_its_password(
    joined: bool,
) -> None:
    with ExitStack() as stack:
        deployed, server = start_index(CONFIG, joined, stack)

        assert server is not None and deployed.redis.url is not None
        expected_host = ray.util.get_node_ip_address() if joined else "127.0.0.1"
        assert server.host == expected_host
        assert redis.Redis.from_url(deployed.redis.url).ping()  # the deployments' URL works
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=server.host, port=server.port).ping()
        assert server.password is not None and server.password not in server.url


def test_a_configured_index_is_left_as_it_is() -> None:
    configured = CONFIG.model_copy(
        update={"redis": CONFIG.redis.model_copy(update={"url": "redis://index:6379/0"})}
    )
    with ExitStack() as stack:
        assert start_index(configured, True, stack) == (configured, None)
