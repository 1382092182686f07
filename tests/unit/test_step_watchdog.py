"""A step that never ends: a hung tensor-parallel rank makes the engine dead, and says so."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time

import pytest

from prism.engine import AsyncEngine, LLMEngine, SamplingParams
from prism.errors import EngineDead
from support.engines import engine_config
from support.models import ReferenceModel, random_prompts

STEP_TIMEOUT_S = 2.0


def test_a_hung_rank_ends_the_streams_and_fails_the_health_check(
    tiny_llama: ReferenceModel,
) -> None:
    config = engine_config(
        num_kv_blocks=64, num_threads=1, tensor_parallel_size=2, step_timeout_s=STEP_TIMEOUT_S
    )
    front = AsyncEngine(LLMEngine(tiny_llama.model_id, tiny_llama.path, config))
    (rank1,) = multiprocessing.active_children()
    params = SamplingParams(max_tokens=400, ignore_eos=True)

    async def main() -> float:
        stream = front.generate(random_prompts([8])[0], params)
        await anext(stream)
        os.kill(rank1.pid, signal.SIGSTOP)
        hung_at = time.monotonic()
        with pytest.raises(EngineDead, match="step_timeout_s"):
            async for _ in stream:
                pass
        return time.monotonic() - hung_at

    try:
        assert asyncio.run(main()) < STEP_TIMEOUT_S + 3
        assert not front.healthy
        with pytest.raises(EngineDead, match="step_timeout_s"):
            front.check_health()
        with pytest.raises(EngineDead):
            asyncio.run(anext(front.generate([1, 2, 3], params)))

        asked = time.monotonic()
        front.shutdown(timeout=1.0)  # the loop thread is still stuck in the step
        assert time.monotonic() - asked < 3
    finally:
        rank1.kill()
        rank1.join()
        front.shutdown()
