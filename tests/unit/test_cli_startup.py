"""The command line and the client start without loading the heavy libraries.

``--help`` must answer at once, so declaring the commands imports no torch, transformers,
Ray or openai (each command imports what it runs); the gRPC client never needs them.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "ray", "openai")


def imported_modules(code: str) -> set[str]:
    """Every module a fresh interpreter imports while running ``code`` (``-X importtime``)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in run.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


def heavy_among(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HEAVY)


COMMANDS = [
    [],
    ["chat"],
    ["serve"],
    ["generate"],
    ["convert"],
    ["bench"],
    ["bench", "engine"],
    ["bench", "serve"],
    ["bench", "routing"],
    ["bench", "autoscale"],
    ["bench", "chaos"],
]


def test_help_of_every_command_loads_no_heavy_library() -> None:
    # One interpreter prints every command's help (argparse exits after each one).
    code = f"""
import contextlib
from prism.cli import main
for command in {COMMANDS!r}:
    with contextlib.suppress(SystemExit):
        main([*command, "--help"])
"""
    modules = imported_modules(code)
    assert {"prism.cli.chat", "prism.cli.bench_engine", "prism.cli.serve"} <= modules
    assert heavy_among(modules) == []


def test_grpc_client_loads_no_heavy_library() -> None:
    modules = imported_modules("import prism.client")
    assert "grpc" in modules
    assert heavy_among(modules) == []


def test_terminal_chat_loads_neither_torch_nor_ray() -> None:
    modules = imported_modules("import prism.conversation")
    assert "openai" in modules
    assert [name for name in heavy_among(modules) if not name.startswith("openai")] == []
