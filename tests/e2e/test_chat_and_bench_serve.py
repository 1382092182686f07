"""``prism chat`` and ``prism bench serve`` against a real ``prism serve`` subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prism.redis_server import free_port
from support.prism_process import ServedPlatform, run_prism

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_url(served_platform: ServedPlatform) -> str:
    """The OpenAI API base URL of the shared ``prism serve`` (default model, one replica)."""
    return f"{served_platform.base_url}/v1"


def test_chat_answers_a_factual_question_read_from_stdin(api_url: str) -> None:
    result = run_prism(
        "chat",
        "--url",
        api_url,
        "--temperature",
        "0",
        stdin="What is the capital of France?\n/exit\n",
    )

    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_chat_reports_an_unknown_model_in_one_line_and_goes_on(api_url: str) -> None:
    result = run_prism("chat", "--url", api_url, "--model", "nope", stdin="Hi\nHello\n")

    assert result.returncode == 0
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert all(line.startswith("prism: error:") and "nope" in line for line in errors)


def test_chat_without_a_server_fails_with_one_error_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"

    result = run_prism("chat", "--url", url, stdin="Hi\n")

    assert result.returncode == 2
    assert result.stdout == ""
    [error] = result.stderr.splitlines()
    assert error.startswith(f"prism: error: cannot reach {url}")


def test_bench_serve_writes_positive_rates_latencies_and_serving_overhead(
    api_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "serve.json"

    result = run_prism(
        "bench",
        "serve",
        "--url",
        api_url,
        "--concurrency",
        "2",
        "--requests",
        "4",
        "--max-tokens",
        "8",
        "--lone-requests",
        "2",
        "--json",
        str(output),
    )

    assert result.returncode == 0, result.stderr
    assert "TTFT s" in result.stdout
    record = json.loads(output.read_text())
    assert record["workload"]["num_requests"] == 4
    results = record["results"]
    assert results["errors"] == 0
    assert results["completed"] == 4
    assert results["output_tokens"] == 4 * 8
    assert results["requests_per_second"] > 0
    assert results["output_tokens_per_second"] > 0
    for measure in ("ttft_seconds", "inter_token_seconds", "end_to_end_seconds"):
        assert all(value > 0 for value in results[measure].values())
    assert sum(results["replicas"].values()) == 4
    assert "lone requests" in result.stdout
    lone = record["lone_requests"]
    assert len(lone["requests"]) == 2
    for request in lone["requests"]:
        assert request["error"] is None and request["replica"]
        assert request["prompt_tokens"] > 700
        assert 0 < request["engine_ttft_seconds"] <= request["http_ttft_seconds"]
    assert lone["cold_start_penalty_seconds"] is not None
    assert lone["overhead_seconds"]["median"] >= 0
