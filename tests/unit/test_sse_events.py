"""The SSE events of an OpenAI stream, byte for byte as clients receive them."""

from __future__ import annotations

import json

from prism.serving import openai_format as fmt


def test_a_chunk_is_one_data_event_of_compact_json() -> None:
    chunk = {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "Hi there"}}]}
    encoded = fmt.chunk_event(chunk).encode()
    assert encoded == (
        b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hi there"}}]}\n\n'
    )


def test_text_with_line_breaks_or_non_ascii_stays_on_one_data_line() -> None:
    text = "caf\u00e9\nnext\rline\u2028sep\u0085end"
    encoded = fmt.chunk_event({"text": text}).encode()
    assert encoded.isascii()
    line, end = encoded.split(b"\n", 1)
    assert end == b"\n"
    assert json.loads(line.removeprefix(b"data: "))["text"] == text


def test_a_late_error_is_an_error_event_with_the_openai_error_body() -> None:
    body = {"error": {"message": "replica lost", "type": "service_unavailable"}}
    encoded = fmt.error_event(body).encode()
    head, data, end = encoded.split(b"\n", 2)
    assert head == b"event: error"
    assert json.loads(data.removeprefix(b"data: ")) == body
    assert end == b"\n"


def test_the_stream_ends_with_data_done() -> None:
    assert fmt.done_event().encode() == b"data: [DONE]\n\n"


def test_a_ping_is_a_comment_that_clients_skip() -> None:
    assert fmt.ping_event().encode() == b": ping\n\n"
