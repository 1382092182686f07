"""The embedded Redis: a password, and no command that reaches beyond the index."""

from __future__ import annotations

import pytest
import redis

from prism.redis_server import DISABLED_COMMANDS, EmbeddedRedis, random_password


def test_it_needs_its_password_and_refuses_host_level_commands() -> None:
    password = random_password()
    with EmbeddedRedis(password=password) as server:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=server.host, port=server.port).ping()
        client = redis.Redis(host=server.host, port=server.port, password=password)
        client.set("k", "v")
        assert client.get("k") == b"v"
        for command in (("CONFIG", "SET", "dir", "/tmp"), ("DEBUG", "SLEEP", "0"), ("SAVE",)):
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(*command)
        assert "CONFIG" in DISABLED_COMMANDS


def test_a_restart_keeps_the_address_and_password_and_loses_the_data() -> None:
    password = random_password()
    with EmbeddedRedis(password=password) as server:
        client = redis.Redis(host=server.host, port=server.port, password=password)
        client.set("k", "v")
        port = server.port
        server.restart()
        assert server.port == port
        assert client.get("k") is None


def test_random_passwords_differ_and_are_long() -> None:
    first, second = random_password(), random_password()
    assert first != second and len(first) >= 40
