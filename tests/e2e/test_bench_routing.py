"""``prism bench routing`` end to end: its own Ray, Redis and one deployment per policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.prism_process import run_prism, single_replica_profile

pytestmark = pytest.mark.slow


def test_bench_routing_compares_two_policies_on_real_deployments(tmp_path: Path) -> None:
    output = tmp_path / "routing.json"

    result = run_prism(
        "bench",
        "routing",
        "--config",
        str(single_replica_profile(tmp_path)),
        "--policies",
        "prefix,pow2",
        "--replicas",
        "2",
        "--requests",
        "8",
        "--groups",
        "2",
        "--prefix-tokens",
        "64",
        "--question-tokens",
        "8",
        "--output-tokens",
        "2",
        "--concurrency",
        "2",
        "--json",
        str(output),
    )

    assert result.returncode == 0, result.stderr
    assert "vs pow2" in result.stdout
    record = json.loads(output.read_text())
    assert [policy["policy"] for policy in record["policies"]] == ["prefix", "pow2"]
    for policy in record["policies"]:
        assert policy["summary"]["errors"] == 0
        assert len(policy["requests"]) == 8
    prefix = record["policies"][0]["summary"]
    assert prefix["predictions"] == 8
    assert prefix["cached_tokens"] > 0
    assert record["router_decision"]["p99_ms"] > 0
    assert output.with_suffix(".png").stat().st_size > 0
