"""The engine's TTFT in a non-streamed response's Server-Timing header."""

from __future__ import annotations

import pytest

from prism.outputs import FinishReason, RequestOutput
from prism.serving.fanout import Choice
from prism.serving.headers import (
    ENGINE_TTFT_METRIC,
    REPLICA_HEADER,
    SERVER_TIMING_HEADER,
    server_timing,
    server_timing_seconds,
)
from prism.serving.messages import GenerateChunk
from prism.serving.responses import whole_response_headers


class NoStream:
    """A choice's stream that is never read (its chunks are absorbed by hand)."""

    def __aiter__(self) -> NoStream:
        return self

    async def __anext__(self) -> GenerateChunk:
        raise StopAsyncIteration

    def cancel(self) -> None:
        pass


def chunk(replica: str, first_token_seconds: float | None, finished: bool) -> GenerateChunk:
    output = RequestOutput(
        request_id="r",
        new_token_ids=[1],
        new_text="",
        finished=finished,
        finish_reason=FinishReason.LENGTH if finished else None,
        num_prompt_tokens=5,
        num_output_tokens=1,
        num_cached_tokens=0,
    )
    return GenerateChunk(output, replica, first_token_seconds)


def choice_of(index: int, replica: str, first_token_seconds: float | None) -> Choice:
    """A choice of two chunks, the first as ``start_choices`` leaves it."""
    first = chunk(replica, first_token_seconds, False)
    choice = Choice(index, 0, NoStream(), first=first)
    for item in (first, chunk(replica, None, True)):
        choice.absorb(item)
    return choice


def test_engine_ttft_is_written_in_milliseconds_and_read_back_in_seconds() -> None:
    header = server_timing(ENGINE_TTFT_METRIC, 0.12345)

    assert header == "engine-ttft;dur=123.5"
    assert server_timing_seconds(header, ENGINE_TTFT_METRIC) == pytest.approx(0.1235)


def test_reading_finds_the_metric_among_others_and_none_when_absent() -> None:
    header = 'cdn-cache;desc="HIT", engine-ttft ; desc="first token" ; dur=42, total;dur=50'

    assert server_timing_seconds(header, ENGINE_TTFT_METRIC) == pytest.approx(0.042)
    assert server_timing_seconds("total;dur=50", ENGINE_TTFT_METRIC) is None
    assert server_timing_seconds("engine-ttft", ENGINE_TTFT_METRIC) is None
    assert server_timing_seconds(None, ENGINE_TTFT_METRIC) is None


def test_a_whole_response_reports_the_slowest_choices_engine_ttft() -> None:
    choices = [choice_of(0, "a", 0.25), choice_of(1, "b", 0.5), choice_of(2, "a", 0.125)]

    headers = whole_response_headers(choices)

    assert headers[REPLICA_HEADER] == "a,b"
    assert headers[SERVER_TIMING_HEADER] == "engine-ttft;dur=500.0"
    assert [choice.first_token_seconds for choice in choices] == [0.25, 0.5, 0.125]


def test_no_server_timing_when_no_replica_reported_a_first_token() -> None:
    headers = whole_response_headers([choice_of(0, "a", None)])

    assert headers[REPLICA_HEADER] == "a"
    assert SERVER_TIMING_HEADER not in headers
