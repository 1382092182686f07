"""The chaos benchmark without Ray: how requests are classified, the ledger, the report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI

from prism.bench.chaos.client import ChaosClient
from prism.bench.chaos.outcomes import LedgerEntry, Observation, Outcome, ServerError
from prism.bench.chaos.plot import write_chaos_plot
from prism.bench.chaos.report import chaos_to_json, format_chaos_report, write_chaos_json
from prism.bench.chaos.results import (
    ChaosResult,
    FaultEvent,
    FaultKind,
    KVCheck,
    ReplicaKV,
    summarize,
)
from prism.bench.chaos.settings import ChaosSettings, fault_times
from prism.bench.machine import Machine

# --- classification ---


def seen(**fields: object) -> Observation:
    observation = Observation(sent_at=1.0)
    for name, value in fields.items():
        setattr(observation, name, value)
    return observation


@pytest.mark.parametrize(
    ("observation", "outcome"),
    [
        (seen(accepted=True, chunks=4, finish_reason="length"), Outcome.COMPLETED),
        (seen(accepted=True, chunks=3, cancelled=True), Outcome.CANCELLED),
        (seen(error=ServerError(503, "service_unavailable", "down")), Outcome.RETRYABLE),
        (seen(error=ServerError(429, "overloaded_error", "full")), Outcome.RETRYABLE),
        (seen(error=ServerError(503, None, "plain text from a proxy")), Outcome.RETRYABLE),
        (seen(error=ServerError(400, "invalid_request_error", "bad")), Outcome.FAILED),
        (seen(error=ServerError(500, "internal_error", "oops")), Outcome.FAILED),
        (
            seen(accepted=True, chunks=1, error=ServerError(None, "service_unavailable", "x")),
            Outcome.RETRYABLE,
        ),
        (
            seen(accepted=True, chunks=1, error=ServerError(None, "internal_error", "x")),
            Outcome.FAILED,
        ),
        (seen(accepted=True, chunks=2), Outcome.LOST),
        (seen(accepted=True, chunks=2, timed_out_after=5.0), Outcome.LOST),
        (seen(accepted=True, chunks=2, broken="ReadError()"), Outcome.LOST),
        (seen(broken="ConnectError()"), Outcome.FAILED),
        (seen(timed_out_after=5.0), Outcome.FAILED),
    ],
    ids=[
        "completed",
        "cancelled",
        "503",
        "429",
        "503-untyped",
        "400",
        "500",
        "retryable-event",
        "internal-event",
        "ended-early",
        "hung",
        "broken",
        "no-connection",
        "no-answer",
    ],
)
def test_each_request_has_one_outcome(observation: Observation, outcome: Outcome) -> None:
    entry = observation.settle(ended_at=3.0)
    assert entry.outcome == outcome
    assert (entry.detail is None) == (outcome == Outcome.COMPLETED)


def test_the_ledger_entry_times_the_first_chunk_from_the_send() -> None:
    observation = Observation(sent_at=2.0)
    observation.accepted = True
    for at in (2.5, 2.75, 3.0):
        observation.chunk(at)
    observation.finish_reason = "length"
    entry = observation.settle(ended_at=3.5)
    assert (entry.ttft, entry.chunks, entry.ended_at) == (0.5, 3, 3.5)


def test_faults_strike_every_interval_within_the_load() -> None:
    assert fault_times(60, 300) == [60, 120, 180, 240]
    assert fault_times(8, 25) == [8, 16, 24]
    assert fault_times(25, 25) == []
    assert fault_times(0, 300) == []


def test_a_cancel_must_come_before_the_last_token() -> None:
    with pytest.raises(ValueError, match="must exceed"):
        ChaosSettings(max_tokens=3, cancel_after_chunks=3)


# --- one request against a fake server ---


def _chunk(content: str | None, finish_reason: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {} if content is None else {"content": content},
                "finish_reason": finish_reason,
            }
        ],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


DONE = b"data: [DONE]\n\n"
RETRYABLE_EVENT = (
    b'event: error\ndata: {"error": {"message": "step failed", "type": "service_unavailable",'
    b' "param": null, "code": null}}\n\n'
)


async def _hang() -> AsyncIterator[bytes]:
    yield _chunk("a")
    await asyncio.sleep(60)


async def _break() -> AsyncIterator[bytes]:
    yield _chunk("a")
    raise httpx.ReadError("connection reset")


class _Stream(httpx.AsyncByteStream):
    def __init__(self, parts: Callable[[], AsyncIterator[bytes]]) -> None:
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self.parts():
            yield part


def _send(
    answer: httpx.Response, cancel_after: int | None = None, timeout_s: float = 5.0
) -> LedgerEntry:
    async def handle(request: httpx.Request) -> httpx.Response:
        return answer

    async def go() -> LedgerEntry:
        async with AsyncOpenAI(
            base_url="http://prism.test/v1",
            api_key="unused",
            max_retries=0,
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(handle)),
        ) as openai_client:
            client = ChaosClient(openai_client, "m", 8, timeout_s, started=0.0)
            return await client.send([{"role": "user", "content": "hi"}], cancel_after)

    return asyncio.run(go())


def _streamed(parts: Iterable[bytes]) -> httpx.Response:
    headers = {"content-type": "text/event-stream", "x-prism-replica": "r1"}
    return httpx.Response(200, headers=headers, content=b"".join(parts))


def test_a_stream_with_a_finish_reason_completes() -> None:
    entry = _send(_streamed([_chunk("a"), _chunk("b"), _chunk(None, "length"), DONE]))
    assert (entry.outcome, entry.accepted, entry.chunks, entry.replica) == (
        Outcome.COMPLETED,
        True,
        2,
        "r1",
    )
    assert entry.ttft is not None


def test_the_client_closes_a_cancelled_stream_after_its_chunks() -> None:
    parts = [_chunk(text) for text in "abcdef"] + [_chunk(None, "length"), DONE]
    entry = _send(_streamed(parts), cancel_after=3)
    assert (entry.outcome, entry.chunks) == (Outcome.CANCELLED, 3)


def test_a_retryable_error_event_mid_stream_is_retryable() -> None:
    entry = _send(_streamed([_chunk("a"), RETRYABLE_EVENT, DONE]))
    assert (entry.outcome, entry.accepted, entry.chunks) == (Outcome.RETRYABLE, True, 1)
    assert entry.detail is not None and "step failed" in entry.detail


@pytest.mark.parametrize(("status", "outcome"), [(503, Outcome.RETRYABLE), (400, Outcome.FAILED)])
def test_an_error_answer_is_not_accepted(status: int, outcome: Outcome) -> None:
    body = {"error": {"message": "no", "type": "t", "param": None, "code": None}}
    entry = _send(httpx.Response(status, json=body))
    assert (entry.outcome, entry.accepted) == (outcome, False)
    assert entry.detail is not None and f"HTTP {status}" in entry.detail


def test_a_stream_that_ends_without_a_finish_reason_is_lost() -> None:
    entry = _send(_streamed([_chunk("a"), _chunk("b")]))
    assert (entry.outcome, entry.chunks) == (Outcome.LOST, 2)


def test_a_stream_that_hangs_past_the_timeout_is_lost() -> None:
    answer = httpx.Response(200, stream=_Stream(_hang))
    entry = _send(answer, timeout_s=0.3)
    assert entry.outcome == Outcome.LOST
    assert entry.detail == "not over within 0.3 s"


def test_a_stream_whose_connection_breaks_is_lost() -> None:
    entry = _send(httpx.Response(200, stream=_Stream(_break)))
    assert (entry.outcome, entry.chunks) == (Outcome.LOST, 1)
    assert entry.detail is not None and "connection failed" in entry.detail


# --- summary, report, JSON and plot ---


def entry(sent_at: float, outcome: Outcome, ttft: float | None = 0.1) -> LedgerEntry:
    accepted = outcome != Outcome.RETRYABLE
    return LedgerEntry(sent_at, sent_at + 1, outcome, accepted, ttft, 2, "r1", None)


def result(ledger: list[LedgerEntry], used_blocks: int = 0, running: int = 0) -> ChaosResult:
    return ChaosResult(
        model="m",
        replicas=2,
        settings=ChaosSettings(duration_s=30, kill_every_s=10, redis_restart_every_s=0),
        ledger=ledger,
        faults=[
            FaultEvent(FaultKind.REPLICA_KILL, 10.0, 0.1, "abc", None),
            FaultEvent(FaultKind.REPLICA_KILL, 20.0, 0.1, None, "RuntimeError: none alive"),
            FaultEvent(FaultKind.STEP_FAULT, 15.0, 0.2, None, None),
        ],
        kv=KVCheck(2, [ReplicaKV("a", 0, 0, 0), ReplicaKV("b", used_blocks, running, 0)]),
        machine=Machine("cpu", 2, 2, 2, "cpu", "cpu", "2.13.0", "5.0", "3.11"),
        date="2026-11-23T00:00:00",
    )


CALM = [
    entry(0.5, Outcome.COMPLETED, 0.2),
    entry(1.0, Outcome.COMPLETED, 0.4),
    entry(2.0, Outcome.CANCELLED),
    entry(11.0, Outcome.RETRYABLE, None),
]


def test_the_summary_counts_outcomes_faults_and_blocks() -> None:
    summary = summarize(result(CALM))
    assert (summary.requests, summary.accepted, summary.completed) == (4, 3, 2)
    assert (summary.cancelled, summary.retryable, summary.failed, summary.lost) == (1, 1, 0, 0)
    assert summary.faults == {"replica_kill": 1, "redis_restart": 0, "step_fault": 1}
    assert summary.faults_not_injected == 1
    assert summary.ttft_p99 == pytest.approx(0.396)
    assert summary.problems == []


def test_lost_requests_failures_and_leaked_blocks_fail_the_run() -> None:
    ledger = [*CALM, entry(3.0, Outcome.LOST), entry(4.0, Outcome.FAILED)]
    summary = summarize(result(ledger, used_blocks=5))
    assert summary.problems == [
        "1 lost",
        "1 failed with a non-retryable error",
        "5 KV blocks still used",
    ]
    assert summarize(result(CALM, running=1)).problems == ["the replicas never all came back idle"]


def test_a_check_that_missed_a_replica_has_not_settled() -> None:
    assert not KVCheck(2, [ReplicaKV("a", 0, 0, 0)]).settled
    assert KVCheck(1, [ReplicaKV("a", 0, 0, 0)]).settled


def test_the_report_shows_each_count_and_the_verdict() -> None:
    report = format_chaos_report(result(CALM))
    assert "replica kill every 10 s (1)" in report
    assert "Redis restart off" in report
    assert "1 could not be injected" in report
    assert "cancelled by the client" in report
    assert report.endswith("PASS")
    failed = format_chaos_report(result([*CALM, entry(3.0, Outcome.LOST)]))
    assert failed.endswith("FAIL: 1 lost")


def test_the_json_record_holds_summary_faults_kv_and_requests(tmp_path: Path) -> None:
    path = tmp_path / "chaos.json"
    write_chaos_json(result(CALM), path)
    record = json.loads(path.read_text())
    assert record == json.loads(json.dumps(chaos_to_json(result(CALM))))
    assert record["benchmark"] == "chaos"
    assert record["passed"] is True
    assert record["summary"]["completed"] == 2
    assert record["kv"] == {
        "expected_replicas": 2,
        "settled": True,
        "leaked_blocks": 0,
        "replicas": [
            {"replica_id": "a", "used_blocks": 0, "running": 0, "waiting": 0},
            {"replica_id": "b", "used_blocks": 0, "running": 0, "waiting": 0},
        ],
    }
    assert [fault["kind"] for fault in record["faults"]] == [
        "replica_kill",
        "replica_kill",
        "step_fault",
    ]
    assert record["requests"][3]["outcome"] == "retryable"
    assert record["machine"]["cpu_cores"] == 2


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "plots" / "chaos.png"
    write_chaos_plot(result([*CALM, entry(3.0, Outcome.LOST, None)]), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
