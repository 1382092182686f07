"""The autoscaling benchmark's load steps and its per-step summary."""

from __future__ import annotations

import pytest

from prism.bench.autoscale.bench import AutoscaleResult
from prism.bench.autoscale.load import TimedRecord
from prism.bench.autoscale.replica_watch import ReplicaSample
from prism.bench.autoscale.report import format_autoscale_report, summarize_steps
from prism.bench.autoscale.settings import AutoscaleSettings, LoadStep, parse_steps
from prism.bench.machine import Machine
from prism.bench.serve.load import RequestRecord


def test_steps_parse_as_clients_by_seconds() -> None:
    assert parse_steps("1x30, 10x120.5,0×5s") == [
        LoadStep(1, 30.0),
        LoadStep(10, 120.5),
        LoadStep(0, 5.0),
    ]
    with pytest.raises(ValueError, match="CLIENTSxSECONDS"):
        parse_steps("10 clients")


def request(sent_at: float, ttft: float | None, error: str | None = None) -> TimedRecord:
    record = RequestRecord(content_times=[] if ttft is None else [ttft], error=error)
    return TimedRecord(sent_at, record)


def sample(at: float, running: int) -> ReplicaSample:
    return ReplicaSample(at=at, running=running, starting=0, stopping=0, nodes=())


def test_each_step_reports_its_replicas_requests_and_ttft() -> None:
    result = AutoscaleResult(
        model="m",
        min_replicas=1,
        max_replicas=3,
        settings=AutoscaleSettings(steps=[LoadStep(1, 10), LoadStep(8, 20)], max_tokens=8),
        samples=[sample(1, 1), sample(12, 1), sample(20, 3), sample(29, 3), sample(40, 1)],
        records=[
            request(2, 0.1),
            request(11, 2.0),
            request(12, 1.0),
            request(25, 0.2),
            request(26, None, error="boom"),
        ],
        machine=Machine("cpu", 2, 2, 2, "cpu", "cpu", "2.13.0", "5.0", "3.11"),
        date="2026-11-23T00:00:00",
    )
    first, busy, wind_down = summarize_steps(result)
    assert (first.clients, first.replicas_low, first.replicas_high, first.requests) == (1, 1, 1, 1)
    assert (busy.replicas_low, busy.replicas_high, busy.requests, busy.errors) == (1, 3, 4, 1)
    assert busy.ttft_p50 == pytest.approx(1.0)
    assert (wind_down.start, wind_down.end, wind_down.replicas_high) == (30, 40, 1)
    assert "10-30 s" in format_autoscale_report(result)
