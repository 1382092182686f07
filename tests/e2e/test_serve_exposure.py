"""What ``prism serve`` exposes with no API key set, and the order it stops in."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest
import redis
import yaml

from support.prism_process import ServedPlatform, single_replica_profile, start_prism_serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keyless_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedPlatform]:
    """The default profile as a user runs it: no key, and gRPC left as shipped."""
    profile = single_replica_profile(tmp_path_factory.mktemp("keyless"))
    settings = yaml.safe_load(profile.read_text())
    del settings["grpc"]["allow_unauthenticated"]
    profile.write_text(yaml.safe_dump(settings))
    served = start_prism_serve(profile)
    yield served
    served.stop()


def _output(served: ServedPlatform) -> str:
    return "".join(served.lines)


def _grpc_port(served: ServedPlatform) -> int:
    return int(served.grpc_target.rpartition(":")[2])


def test_grpc_stays_off_without_a_key(keyless_platform: ServedPlatform) -> None:
    output = _output(keyless_platform)
    assert "gRPC API:      (off)" in output
    assert "grpc.allow_unauthenticated" in output  # the warning says how to turn it on
    with pytest.raises(OSError), socket.socket() as probe:
        probe.connect(("127.0.0.1", _grpc_port(keyless_platform)))


def test_the_embedded_redis_is_loopback_only_and_needs_its_password(
    keyless_platform: ServedPlatform,
) -> None:
    output = _output(keyless_platform)
    listed = re.search(r"Redis \(prefix index\)\s+(\S+):(\d+)", output)
    assert listed is not None, output
    host, port = listed.group(1), int(listed.group(2))
    assert host == "127.0.0.1"
    assert re.search(r"Redis:\s+redis://127\.0\.0\.1:\d+/0\n", output)  # no password shown
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=port, socket_timeout=5).ping()


def test_serve_stops_before_the_index(keyless_platform: ServedPlatform) -> None:
    """Replicas publish to Redis until they stop: stopping Redis first makes them complain."""
    assert keyless_platform.stop() == 0
    assert "prefix index unreachable" not in _output(keyless_platform)
