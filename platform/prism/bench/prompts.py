"""The prompt texts the engine and serving benchmarks share."""

from __future__ import annotations

STORY_PROMPT = "Write a short story about a robot number {index}."
# Warm-up runs on raw text that shares no prefix with the workload, so it caches no KV the
# measured runs could reuse.
WARMUP_TEXT = "Warm up the kernels before timing anything."
WARMUP_TOKENS = 8
