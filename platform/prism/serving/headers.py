"""HTTP headers Prism reads or adds beyond the OpenAI API, and how Server-Timing is written."""

from __future__ import annotations

REPLICA_HEADER = "x-prism-replica"
"""Response: the model replicas that served the call."""

PREDICTED_CACHED_HEADER = "x-prism-predicted-cached-tokens"
"""Response, under the ``prefix`` policy: prompt tokens the router expected to be cached."""

SESSION_HEADER = "x-session-id"
"""Request: a client's session id, for the ``session`` routing policy."""

SERVER_TIMING_HEADER = "server-timing"
"""Response, non-streamed generations only (a stream's headers leave before its first token):
the W3C Server-Timing metric :data:`ENGINE_TTFT_METRIC`."""

ENGINE_TTFT_METRIC = "engine-ttft"
"""Milliseconds from the engine request's arrival at its replica to its first token, queueing
included; with several choices (``n``, several prompts), the slowest choice's."""


def server_timing(metric: str, seconds: float) -> str:
    """One Server-Timing entry: ``metric;dur=<milliseconds>``."""
    return f"{metric};dur={seconds * 1000:.1f}"


def server_timing_seconds(header: str | None, metric: str) -> float | None:
    """The ``dur`` of ``metric`` in a Server-Timing header value, in seconds.

    None when the header or the metric is missing, or the metric has no duration.
    """
    for entry in (header or "").split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        if name != metric:
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "dur":
                return float(value.strip().strip('"')) / 1000
    return None
