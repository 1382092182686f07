"""GCS fault tolerance: with the GCS's tables in Redis, Serve keeps answering through the
worker nodes' proxies while the head's GCS is down and after it is back, and no worker node
restarts.

A cluster of two nodes from ``ray start`` (:mod:`support.gcs_cluster`): a head without CPUs
whose GCS stores its tables in Redis, and a worker. Prism's application is deployed from a
Serve config shaped like the chart's (``platform_app``, an HTTP proxy on every node), and
requests go back to back to the worker node's proxy while

- the head's GCS server is killed (SIGKILL) and, a while later, started again with its own
  command line and environment: it reads the cluster's tables back from Redis (same session,
  storage namespace and port) and the raylets, which kept running, reconnect to it;
- every process of the head node is killed at once, as when its pod dies, and the head is
  started again by ``ray start --head`` against the same Redis, as KubeRay restarts the pod:
  it finds the session in Redis, Serve's controller comes back on the new head node and
  takes over the replicas that kept running on the worker.

The ingress replicas are kept off the head as the chart keeps them: they ask for a custom
resource (``http.ingress_resources``) only the worker node declares. Prism's ingress asks for
no CPU, so without it Ray may place one on the head, where it dies with the head's processes
and fails the requests it holds.

The cluster is this module's own (own folder, ports, token and Redis servers); it never
touches the Ray instance other tests share.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prism.redis_server import EmbeddedRedis, random_password
from support.gcs_cluster import GcsRedisCluster, NodeProcess, ServeState
from support.gcs_driver import MODEL_ID
from support.steady_traffic import SteadyTraffic

DOWN_S = 8.0
"""How long the GCS, or the head, stays dead: well under the 60 s after which a raylet that
cannot reach the GCS exits (``RAY_gcs_rpc_server_reconnect_timeout_s``)."""
MIN_ANSWERS_WHILE_DOWN = 10
STORAGE_NAMESPACE = "prism-gcs-ft-test"
PROMPT = [1000 + i for i in range(24)]
Restart = Callable[[], None]
"""Brings back what a kill took down."""


@pytest.fixture(scope="module")
def cluster(tiny_chat_model: Path) -> Iterator[GcsRedisCluster]:
    """The cluster with Prism's application running (its prefix index in a Redis of its own)."""
    # Short on purpose: Ray's Unix socket paths live under this folder.
    root = Path(tempfile.mkdtemp(prefix="prism-gcs-", dir="/tmp"))
    try:
        with (
            EmbeddedRedis(password=random_password()) as gcs_redis,
            EmbeddedRedis() as index_redis,
        ):
            gcs_cluster = GcsRedisCluster(root, gcs_redis, STORAGE_NAMESPACE)
            try:
                gcs_cluster.start()
                gcs_cluster.driver(
                    "deploy",
                    str(gcs_cluster.head_http_port),
                    index_redis.url,
                    str(tiny_chat_model),
                )
                yield gcs_cluster
            finally:
                gcs_cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def start_traffic(cluster: GcsRedisCluster) -> SteadyTraffic:
    """Back-to-back completions through the worker node's proxy, once they are answered."""
    body = {"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 2}
    url = f"http://127.0.0.1:{cluster.worker_http_port}/v1/completions"
    traffic = SteadyTraffic(url, body).start()
    traffic.wait_for_answers(5, since=0.0, timeout=60)
    return traffic


def ride_out(
    cluster: GcsRedisCluster, what: str, kill: Callable[[], Callable[[], None]]
) -> ServeState:
    """Send requests through the worker's proxy while ``kill`` takes the GCS down for
    ``DOWN_S`` and the function it returns brings it back; assert none failed and enough were
    answered while it was down. Returns Serve's state once it is RUNNING again."""
    traffic = start_traffic(cluster)
    try:
        bring_back = kill()
        killed = time.monotonic()
        time.sleep(DOWN_S)
        assert not cluster.gcs_accepts_connections(), "the GCS came back by itself"
        restarted = time.monotonic()
        bring_back()
        after = cluster.driver("state")
        running = time.monotonic()
        traffic.wait_for_answers(5, since=running, timeout=30)
    finally:
        outcomes = traffic.stop()
    down = [outcome for outcome in outcomes if outcome.ok and outcome.within(killed, restarted)]
    failed = [outcome for outcome in outcomes if not outcome.ok]
    print(
        f"{what}: {len(outcomes)} requests, {len(failed)} failed, {len(down)} answered while "
        f"down ({DOWN_S:.0f} s); RUNNING again {running - restarted:.1f} s after the restart"
    )
    assert failed == []
    assert len(down) >= MIN_ANSWERS_WHILE_DOWN
    return after


def kill_gcs(cluster: GcsRedisCluster) -> Restart:
    """Kill the head's GCS server; the returned function starts it again as it was."""
    launch = cluster.kill_gcs()
    return lambda: cluster.restart_gcs(launch)


def kill_head(cluster: GcsRedisCluster) -> Restart:
    """Kill every process of the head node; the returned function runs ``ray start --head``."""
    cluster.kill_head()
    return cluster.start_head


def assert_replicas_unchanged(before: ServeState, after: ServeState, worker: str) -> None:
    """The same replica actors, in the same processes on the worker, never restarted."""
    assert before.replicas and {r["node_id"] for r in before.replicas.values()} == {worker}
    assert after.replicas == before.replicas
    assert {replica["state"] for replica in after.replicas.values()} == {"ALIVE"}
    assert after.app_status == "RUNNING"
    assert set(after.deployments.values()) == {"HEALTHY"}
    assert set(after.proxies.values()) == {"HEALTHY"}


def test_serve_answers_while_the_gcs_is_down_and_after_it_restarts(
    cluster: GcsRedisCluster,
) -> None:
    before = cluster.driver("state")
    head = before.node_on_port(cluster.head_node_manager_port)
    worker = before.node_on_port(cluster.worker_node_manager_port)
    raylets = {
        port: NodeProcess.of(cluster.raylet(port))
        for port in (cluster.head_node_manager_port, cluster.worker_node_manager_port)
    }
    after = ride_out(cluster, "GCS restart", lambda: kill_gcs(cluster))

    assert_replicas_unchanged(before, after, worker)
    assert set(after.proxies) == {head, worker}
    # No node restarted or registered again: the same two nodes, the same raylet processes.
    assert after.alive_nodes() == before.alive_nodes() == {head, worker}
    for port, raylet in raylets.items():
        assert raylet.is_running()
        assert cluster.raylet(port).pid == raylet.pid


def test_serve_answers_while_the_head_node_restarts(cluster: GcsRedisCluster) -> None:
    before = cluster.driver("state")
    old_head = before.node_on_port(cluster.head_node_manager_port)
    worker = before.node_on_port(cluster.worker_node_manager_port)
    worker_raylet = NodeProcess.of(cluster.raylet(cluster.worker_node_manager_port))
    after = ride_out(cluster, "head node restart", lambda: kill_head(cluster))

    assert_replicas_unchanged(before, after, worker)
    # A new head node took the old one's place; the worker node never left.
    new_head = after.node_on_port(cluster.head_node_manager_port)
    assert new_head != old_head and not after.nodes[old_head]["alive"]
    assert after.nodes[new_head]["head"]
    assert after.alive_nodes() == {new_head, worker}
    assert set(after.proxies) == {new_head, worker}
    assert worker_raylet.is_running()
    assert cluster.raylet(cluster.worker_node_manager_port).pid == worker_raylet.pid
