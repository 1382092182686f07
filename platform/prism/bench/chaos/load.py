"""The chaos load: closed-loop streaming clients until the duration is up.

Each client sends its next request as soon as its previous one ends, and sends none after
the duration; requests in flight then run to their end. A share of requests, drawn at
random, is closed by the client after a few text chunks.
"""

from __future__ import annotations

import asyncio
import itertools
import random

from prism.bench.chaos.client import ChaosClient
from prism.bench.chaos.outcomes import LedgerEntry
from prism.bench.chaos.settings import ChaosSettings
from prism.bench.serve.prompts import Messages


async def run_load(
    client: ChaosClient, prompts: list[Messages], settings: ChaosSettings
) -> list[LedgerEntry]:
    """Run ``settings.concurrency`` clients for ``settings.duration_s``; every request's entry."""
    rng = random.Random(settings.seed)
    pending = itertools.cycle(prompts)
    ledger: list[LedgerEntry] = []

    async def client_loop() -> None:
        while client.now() < settings.duration_s:
            cancel = rng.random() < settings.cancel_share
            cancel_after = settings.cancel_after_chunks if cancel else None
            ledger.append(await client.send(next(pending), cancel_after))

    await asyncio.gather(*(client_loop() for _ in range(settings.concurrency)))
    return ledger
