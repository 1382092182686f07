"""What the autoscaling benchmark plays: load steps, and how it samples and waits.

Nothing here loads Ray or a client library, so the command line can parse steps with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STEP = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+(?:\.\d+)?)\s*s?\s*$")


@dataclass(frozen=True, slots=True)
class LoadStep:
    """``clients`` closed-loop clients for ``seconds``."""

    clients: int
    seconds: float


def parse_steps(text: str) -> list[LoadStep]:
    """``"1x30,10x120,1x60"``: clients x seconds, in order."""
    steps = []
    for part in text.split(","):
        match = _STEP.match(part)
        if match is None:
            raise ValueError(f"not a load step: {part!r} (expected CLIENTSxSECONDS, e.g. 8x60)")
        steps.append(LoadStep(int(match[1]), float(match[2])))
    return steps


@dataclass(frozen=True, slots=True)
class AutoscaleSettings:
    steps: list[LoadStep]
    max_tokens: int
    sample_period_s: float = 1.0
    settle_timeout_s: float = 180.0
    timeout_s: float = 300.0
