"""Every grpcurl command and Python example in docs/grpc.md works as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.prism_process import ServedPlatform

pytestmark = pytest.mark.slow

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "grpc.md"
DOCUMENTED_TARGET = "localhost:9000"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)


def grpcurl_commands() -> list[str]:
    return [
        line
        for block in code_blocks("shell")
        for line in block.splitlines()
        if line.startswith("grpcurl ")
    ]


def run_here(command: list[str], served: ServedPlatform) -> subprocess.CompletedProcess[str]:
    """Run a documented command against the test platform instead of localhost:9000."""
    command = [part.replace(DOCUMENTED_TARGET, served.grpc_target) for part in command]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": path}
    )


def test_the_guide_has_examples() -> None:
    assert len(grpcurl_commands()) >= 6
    assert len(code_blocks("python")) == 2


@pytest.mark.parametrize("command", grpcurl_commands())
def test_grpcurl_commands(served_platform: ServedPlatform, command: str) -> None:
    result = run_here(["bash", "-c", command], served_platform)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    if "Chat" in command:
        assert "Paris" in result.stdout
    if "Health" in command:
        assert '"status": "SERVING"' in result.stdout


@pytest.mark.parametrize("example", range(2))
def test_python_examples(served_platform: ServedPlatform, example: int) -> None:
    source = code_blocks("python")[example]

    result = run_here([sys.executable, "-c", source], served_platform)

    assert result.returncode == 0, result.stderr
    if example == 0:
        assert "The capital of France is Paris." in result.stdout
        assert "SERVING" in result.stdout
    else:
        assert "INVALID_ARGUMENT: temperature" in result.stdout
