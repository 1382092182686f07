"""Every curl command and Python example in docs/structured-output.md works as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.prism_process import ServedPlatform

pytestmark = pytest.mark.slow

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "structured-output.md"
DOCUMENTED_URL = "http://127.0.0.1:8000"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)


def run_here(command: list[str], served: ServedPlatform) -> subprocess.CompletedProcess[str]:
    """Run a documented example against the test platform instead of 127.0.0.1:8000."""
    command = [part.replace(DOCUMENTED_URL, served.base_url) for part in command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_guide_has_examples() -> None:
    assert len(code_blocks("shell")) == 3
    assert len(code_blocks("python")) == 3


def test_the_json_schema_curl_gives_a_place(served_platform: ServedPlatform) -> None:
    result = run_here(["bash", "-c", code_blocks("shell")[0]], served_platform)
    message = json.loads(result.stdout)["choices"][0]["message"]
    assert set(json.loads(message["content"])) == {"city", "country"}


def test_the_choice_curl_picks_one(served_platform: ServedPlatform) -> None:
    result = run_here(["bash", "-c", code_blocks("shell")[1]], served_platform)
    assert json.loads(result.stdout)["choices"][0]["text"] in (" Paris", " Lyon", " Marseille")


def test_the_tools_curl_calls_the_function(served_platform: ServedPlatform) -> None:
    result = run_here(["bash", "-c", code_blocks("shell")[2]], served_platform)
    choice = json.loads(result.stdout)["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert set(json.loads(call["function"]["arguments"])) == {"city"}
    assert choice["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("example", "printed"),
    [
        (0, r"\S+.* \S+"),
        (1, r"[A-Z]{3}-[0-9]{4}"),
        (2, r"call: get_weather \{'city': '[^']*'\}\nanswer: .+"),
    ],
)
def test_python_examples(served_platform: ServedPlatform, example: int, printed: str) -> None:
    result = run_here([sys.executable, "-c", code_blocks("python")[example]], served_platform)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(printed, result.stdout.strip(), flags=re.DOTALL), result.stdout
