"""What each replica reports to Serve for autoscaling (``record_autoscaling_stats``).

Serve averages every reported value over the look-back window, per replica, and hands the
result to :class:`prism.autoscaling.policy.PrismAutoscalingPolicy`.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from prism.engine_stats import EngineStats

RUNNING = "running"
WAITING = "waiting"
KV_USAGE = "kv_usage"
PENDING_PREFILL_TOKENS = "pending_prefill_tokens"
TTFT_P90_S = "ttft_p90_s"
OUTPUT_TOKENS_PER_S = "output_tokens_per_s"

DEFAULT_WINDOW_S = 30.0


class RecentRequests:
    """Time to first token and output tokens of one replica's last ``window_s`` seconds.

    A request still waiting for its first token counts with its age so far, so a queue that
    stalls shows up before any slow request finishes.
    """

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.window_s = window_s
        self._waiting_since: dict[str, float] = {}
        self._ttfts: deque[tuple[float, float]] = deque()
        self._tokens: deque[tuple[float, int]] = deque()

    def arrived(self, request_id: str, at: float) -> None:
        self._waiting_since[request_id] = at

    def produced(self, request_id: str, num_tokens: int, at: float) -> None:
        """Record ``num_tokens`` new output tokens of a request at time ``at``."""
        if not num_tokens:
            return
        arrival = self._waiting_since.pop(request_id, None)
        if arrival is not None:
            self._ttfts.append((at, at - arrival))
        self._tokens.append((at, num_tokens))

    def left(self, request_id: str) -> None:
        """The request ended (finished, failed or cancelled)."""
        self._waiting_since.pop(request_id, None)

    def ttft_p90(self, now: float) -> float:
        """The 90th percentile TTFT of the window, waiting requests' ages included (0 if none)."""
        self._expire(now)
        samples = [ttft for _, ttft in self._ttfts]
        samples += [now - arrival for arrival in self._waiting_since.values()]
        if not samples:
            return 0.0
        # The nearest-rank percentile: a TTFT some request really had (or still waits for).
        return float(np.percentile(samples, 90, method="inverted_cdf"))

    def output_tokens_per_s(self, now: float) -> float:
        self._expire(now)
        return sum(count for _, count in self._tokens) / self.window_s

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        for samples in (self._ttfts, self._tokens):
            while samples and samples[0][0] < horizon:
                samples.popleft()


def autoscaling_stats(stats: EngineStats, recent: RecentRequests, now: float) -> dict[str, float]:
    """The values one replica reports: its load now and its recent latency and throughput."""
    return {
        RUNNING: float(stats.num_running),
        WAITING: float(stats.num_waiting),
        KV_USAGE: stats.kv_cache_usage,
        PENDING_PREFILL_TOKENS: float(stats.num_pending_prefill_tokens),
        TTFT_P90_S: recent.ttft_p90(now),
        OUTPUT_TOKENS_PER_S: recent.output_tokens_per_s(now),
    }
