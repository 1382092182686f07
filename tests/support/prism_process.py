"""``prism serve`` as a subprocess, as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from prism.config import DEFAULT_PROFILE
from prism.redis_server import free_port

READY_LINE = "Prism is serving"
START_TIMEOUT_S = 240


@dataclass
class ServedPlatform:
    """A running ``prism serve`` process and what it printed."""

    process: subprocess.Popen[str]
    base_url: str
    grpc_target: str
    lines: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 90.0) -> int:
        """Ctrl-C the server and wait for it to exit; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the server and all it started
                self.process.wait()
        return self.process.returncode


def single_replica_profile(folder: Path, source: Path = DEFAULT_PROFILE) -> Path:
    """A profile (default: the default one) with one replica of each model and free ports, so
    tests never clash."""
    profile = yaml.safe_load(source.read_text())
    for model in profile["models"]:
        model["replicas"] = 1
    profile["http"]["port"] = free_port()
    profile["grpc"]["port"] = free_port()
    profile["grpc"]["allow_unauthenticated"] = True  # the tests call gRPC without a key
    profile["ray"]["dashboard_port"] = free_port()
    profile["ray"]["metrics_export_port"] = free_port()
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def start_prism_serve(profile: Path) -> ServedPlatform:
    """Start ``prism serve`` and wait for its ready line (its output is kept)."""
    settings = yaml.safe_load(profile.read_text())
    process = subprocess.Popen(
        [sys.executable, "-m", "prism.cli", "serve", "--config", str(profile)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PRISM_API_KEY": "", "RAY_ADDRESS": ""},
        start_new_session=True,
    )
    served = ServedPlatform(
        process,
        f"http://127.0.0.1:{settings['http']['port']}",
        f"127.0.0.1:{settings['grpc']['port']}",
    )
    ready = threading.Event()

    def read_output() -> None:
        for line in process.stdout:
            served.lines.append(line)
            if READY_LINE in line:
                ready.set()

    threading.Thread(target=read_output, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready.wait(0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            served.stop()
            pytest.fail("prism serve did not start:\n" + "".join(served.lines[-60:]))
    return served


def run_prism(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run a ``prism`` command to completion; its output is captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "prism.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
