"""``prism bench chaos`` end to end: its own Ray, Redis and two tiny replicas, under faults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from prism.models import ResolvedModel
from support.models import save_tiny_chat_model
from support.prism_process import run_prism, single_replica_profile

pytestmark = pytest.mark.slow


def two_tiny_replicas_profile(folder: Path, tokenizer_source: Path) -> Path:
    """The default profile, free ports, with two replicas of a tiny random model."""
    path = single_replica_profile(folder)
    profile = yaml.safe_load(path.read_text())
    model = profile["models"][0]
    model["replicas"] = 2
    model["source"] = str(save_tiny_chat_model(folder / "tiny-chat", tokenizer_source))
    model["engine"]["kv_cache_bytes"] = "16MiB"
    profile["grpc"]["enabled"] = False
    path.write_text(yaml.safe_dump(profile))
    return path


def test_bench_chaos_loses_no_request_and_leaks_no_block(
    tmp_path: Path, smollm2_files: ResolvedModel
) -> None:
    output = tmp_path / "chaos.json"

    result = run_prism(
        "bench",
        "chaos",
        "--config",
        str(two_tiny_replicas_profile(tmp_path, smollm2_files.path)),
        "--duration",
        "25",
        "--kill-every",
        "10",
        "--redis-restart-every",
        "8",
        "--fault-every",
        "6",
        "--concurrency",
        "4",
        "--timeout",
        "20",
        "--json",
        str(output),
    )

    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    record = json.loads(output.read_text())
    summary = record["summary"]
    assert summary["accepted"] > 0
    assert summary["completed"] > 0
    assert summary["cancelled"] > 0
    assert summary["lost"] == 0
    assert summary["failed"] == 0
    assert summary["leaked_kv_blocks"] == 0
    assert record["kv"]["settled"]
    # A kill waits for the last one's replica to be back, which may take past the load.
    assert all(count >= 1 for count in summary["faults"].values()), summary["faults"]
    assert output.with_suffix(".png").stat().st_size > 0
