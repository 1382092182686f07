"""A two-node Ray cluster whose GCS keeps its tables in an external Redis (GCS fault tolerance).

Both nodes are started by ``ray start``, as on Kubernetes: the head with ``RAY_REDIS_ADDRESS``
and ``--redis-password`` (what KubeRay's ``gcsFaultToleranceOptions`` sets up), under a
storage namespace of its own (``RAY_external_storage_namespace``); the worker with
``--address``. Every port is free-picked and every file lives under one short temporary
folder, so the cluster never meets another Ray instance on the machine.

Each ``ray start`` runs in a session of its own and leaves its processes in it (it neither
blocks nor starts a reaper), so the cluster's processes are exactly those of its sessions,
plus any GCS this module restarts; :meth:`GcsRedisCluster.stop` ends them all, by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from prism.redis_server import EmbeddedRedis, free_port

INGRESS_RESOURCE = "prism-ingress"
"""The custom resource only the worker node declares (as the chart's worker pods do), which
the ingress replicas ask for: none runs on the head."""

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
STOP_GRACE_S = 5.0
WORKER_CPUS = 2


@dataclass(frozen=True)
class ProcessLaunch:
    """How a running process was started: enough to start it again as it was."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str

    @classmethod
    def of(cls, process: psutil.Process) -> ProcessLaunch:
        return cls(tuple(process.cmdline()), process.environ(), process.cwd())


@dataclass(frozen=True)
class NodeProcess:
    """A Ray process seen from the outside: which one, and since when."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, process: psutil.Process) -> NodeProcess:
        return cls(process.pid, process.create_time())

    def is_running(self) -> bool:
        """The same process (not a later one reusing its pid) is still running."""
        try:
            process = psutil.Process(self.pid)
            return process.create_time() == self.create_time and process.is_running()
        except psutil.NoSuchProcess:
            return False


@dataclass(frozen=True)
class ServeState:
    """What a driver read from the GCS and Serve: nodes, the application, its replicas."""

    nodes: dict[str, dict]
    """Alive or dead, by node id: ``alive``, ``head``, ``node_manager_port``."""
    proxies: dict[str, str]
    """Serve's HTTP proxies' statuses, by node id."""
    app_status: str
    deployments: dict[str, str]
    replicas: dict[str, dict]
    """By replica actor name: ``actor_id``, ``node_id``, ``pid``, ``state``, ``num_restarts``."""

    @classmethod
    def parse(cls, output: str) -> ServeState:
        lines = [line for line in output.splitlines() if line.startswith("{")]
        assert lines, f"the driver printed no state:\n{output}"
        return cls(**json.loads(lines[-1]))

    def alive_nodes(self) -> set[str]:
        return {node_id for node_id, node in self.nodes.items() if node["alive"]}

    def node_on_port(self, port: int) -> str:
        (node_id,) = [
            node_id
            for node_id, node in self.nodes.items()
            if node["alive"] and node["node_manager_port"] == port
        ]
        return node_id


@dataclass
class GcsRedisCluster:
    """A head node (GCS in ``redis``) and one worker node with its own Serve HTTP proxy.

    The head declares no CPUs, so model replicas land on the worker; the worker's proxy
    listens on :attr:`worker_http_port` (Serve's per-node port override), the head's on
    :attr:`head_http_port`. The head can lose its GCS alone (:meth:`kill_gcs`,
    :meth:`restart_gcs`) or all its processes, as when its pod dies (:meth:`kill_head`,
    :meth:`start_head`).
    """

    root: Path
    redis: EmbeddedRedis
    namespace: str
    gcs_port: int = field(default_factory=free_port)
    head_http_port: int = field(default_factory=free_port)
    worker_http_port: int = field(default_factory=free_port)
    head_node_manager_port: int = field(default_factory=free_port)
    worker_node_manager_port: int = field(default_factory=free_port)
    auth_token: str = field(default_factory=lambda: secrets.token_hex(32))
    _head_sessions: set[int] = field(default_factory=set)
    """The head's ``ray start`` sessions and the GCS servers started again, by session id."""
    _worker_sessions: set[int] = field(default_factory=set)
    _restarted: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def _base_env(self) -> dict[str, str]:
        """This process's environment less Ray's settings, plus the cluster's own token.

        Ray's token authentication is set explicitly, with a token of the cluster's own:
        left unset, a head node turns it on when it finds a token in the user's home, and
        a worker node does not.
        """
        env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = self.auth_token
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
        return env

    def _ray_start(self, args: list[str], env: dict[str, str], log_name: str) -> int:
        """``ray start`` in a session of its own, whose id it returns; its processes stay
        in that session."""
        log = self.root / f"{log_name}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                [str(BIN / "ray"), "start", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            # Recorded before the wait: what it started is the cluster's even if it fails.
            sessions = self._head_sessions if log_name == "head" else self._worker_sessions
            sessions.add(process.pid)
            status = process.wait(timeout=120)
        assert status == 0, f"ray start {log_name} failed:\n{log.read_text()[-4000:]}"
        return process.pid

    def _node_args(self, node_manager_port: int) -> list[str]:
        return [
            "--node-ip-address=127.0.0.1",
            f"--node-manager-port={node_manager_port}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--min-worker-port=0",
            "--max-worker-port=0",
            f"--object-store-memory={128 * MiB}",
            f"--temp-dir={self.root / 'ray'}",
            "--disable-usage-stats",
        ]

    def start(self) -> None:
        self.start_head()
        worker_env = self._base_env() | {
            "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(self.worker_http_port),
        }
        self._ray_start(
            [
                f"--address={self.address}",
                f"--num-cpus={WORKER_CPUS}",
                "--num-gpus=0",
                f"--resources={json.dumps({INGRESS_RESOURCE: 1000})}",
                *self._node_args(self.worker_node_manager_port),
            ],
            worker_env,
            "worker",
        )

    def start_head(self) -> None:
        """``ray start --head`` with the GCS in Redis: the first time, or again after
        :meth:`kill_head`, when it finds the session in Redis and carries on with it.

        The same GCS and node manager ports each time, as a restarted head pod keeps its
        service address. The file naming the last cluster started is removed first: on one
        machine ``ray start`` would take the worker's raylet, which names that address, for
        a head still running there.
        """
        (self.root / "ray" / "ray_current_cluster").unlink(missing_ok=True)
        env = self._base_env() | {
            "RAY_REDIS_ADDRESS": f"{self.redis.host}:{self.redis.port}",
            "RAY_external_storage_namespace": self.namespace,
        }
        self._ray_start(
            [
                "--head",
                f"--port={self.gcs_port}",
                f"--redis-password={self.redis.password}",
                f"--ray-client-server-port={free_port()}",
                "--include-dashboard=false",
                "--num-cpus=0",
                "--num-gpus=0",
                *self._node_args(self.head_node_manager_port),
            ],
            env,
            "head",
        )

    def _processes(self, sessions: set[int]) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) in sessions:
                    found.append(process)
            except (ProcessLookupError, PermissionError):
                continue
        return found

    def processes(self) -> list[psutil.Process]:
        """Every running process of the cluster: its sessions' and the restarted GCSes'."""
        return self._processes(self._head_sessions | self._worker_sessions)

    def head_processes(self) -> list[psutil.Process]:
        return self._processes(self._head_sessions)

    def _named(self, name: str, port_flag: str | None = None) -> psutil.Process:
        matches = []
        for process in self.processes():
            try:
                if process.name() != name:
                    continue
                if port_flag is None or port_flag in process.cmdline():
                    matches.append(process)
            except psutil.NoSuchProcess:
                continue
        assert len(matches) == 1, f"{len(matches)} {name} processes ({port_flag})"
        return matches[0]

    def gcs_server(self) -> psutil.Process:
        return self._named("gcs_server")

    def raylet(self, node_manager_port: int) -> psutil.Process:
        return self._named("raylet", f"--node_manager_port={node_manager_port}")

    def gcs_accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.gcs_port), timeout=1.0):
                return True
        except OSError:
            return False

    def kill_gcs(self) -> ProcessLaunch:
        """SIGKILL the GCS server, as a crash would; returns how to start it again."""
        server = self.gcs_server()
        launch = ProcessLaunch.of(server)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        return launch

    def restart_gcs(self, launch: ProcessLaunch, timeout: float = 30.0) -> None:
        """Start the GCS server again with its command line, environment and folder.

        The command line holds what the GCS needs to find its state again: the Redis
        address and password, the session name, its port and the head's node id; the
        environment holds the storage namespace.
        """
        log = self.root / "gcs-restart.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                list(launch.argv),
                env=launch.env,
                cwd=launch.cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._restarted.append(process)
        self._head_sessions.add(process.pid)
        self._wait_for_gcs(timeout, lambda: process.poll() is None)

    def kill_head(self) -> None:
        """SIGKILL every process of the head node at once, as when its pod dies."""
        processes = self.head_processes()
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        _, alive = psutil.wait_procs(processes, timeout=10)
        assert not alive, f"head processes survived SIGKILL: {alive}"
        for process in self._restarted:
            process.wait(timeout=10)

    def _wait_for_gcs(self, timeout: float, still_starting: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        while not self.gcs_accepts_connections():
            assert still_starting(), "the GCS exited while starting"
            assert time.monotonic() < deadline, "the GCS never listened"
            time.sleep(0.1)

    def driver(self, command: str, *args: str, timeout: float = 240.0) -> ServeState:
        """Run :mod:`support.gcs_driver` against the cluster; returns the state it printed."""
        result = subprocess.run(
            [sys.executable, "-m", "support.gcs_driver", command, self.address, *args],
            env=self._base_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"gcs_driver {command} failed:\n{output[-6000:]}"
        return ServeState.parse(result.stdout)

    def stop(self) -> None:
        """SIGTERM every process of the cluster, then SIGKILL what is left after a grace."""
        remaining = self.processes()
        for process in remaining:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.terminate()
        _, alive = psutil.wait_procs(remaining, timeout=STOP_GRACE_S)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=STOP_GRACE_S)
        for process in self._restarted:
            process.wait(timeout=STOP_GRACE_S)
        left = self.processes()
        assert not left, f"cluster processes outlived stop(): {[p.pid for p in left]}"
