"""A failed step ends its own requests and leaves the scheduler and the KV cache consistent."""

from __future__ import annotations

import pytest
import torch

from prism.engine import LLMEngine, SamplingParams
from prism.engine.step_faults import InjectedFault, is_fatal
from prism.errors import EngineDead, InvalidRequest, RankLost, StepFailed
from prism.kv_events import BlocksStored
from support.engines import engine_config
from support.models import ReferenceModel, random_prompts

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def run_to_end(engine: LLMEngine, request_id: str, prompt: list[int]) -> tuple[list[int], int]:
    """A request's greedy tokens and its cached prompt tokens, run alone."""
    engine.add_request(request_id, prompt, GREEDY)
    tokens, cached = [], 0
    while engine.has_unfinished_requests():
        for output in engine.step():
            tokens.extend(output.new_token_ids)
            cached = output.num_cached_tokens
    return tokens, cached


def test_a_failed_step_ends_its_requests_and_caches_only_computed_blocks(
    tiny_llama: ReferenceModel,
) -> None:
    prompt = random_prompts([7])[0]
    config = engine_config(block_size=4, num_kv_blocks=32, fault_injection=True)
    with LLMEngine(tiny_llama.model_id, tiny_llama.path, config) as engine:
        engine.add_request("running", prompt, GREEDY)
        assert engine.step()  # the prompt's first block is computed and cached
        prefix = engine.cached_block_hashes()
        assert len(prefix) == 1
        engine.drain_events()
        engine.add_request("admitted", prompt, GREEDY)  # a prefix hit on that block

        engine.inject_step_fault()
        with pytest.raises(StepFailed) as failure:
            engine.step()  # would complete the running request's second block

        assert failure.value.request_ids == ("running", "admitted")
        assert isinstance(failure.value.__cause__, InjectedFault)
        assert engine.cached_block_hashes() == prefix
        assert not [event for event in engine.drain_events() if isinstance(event, BlocksStored)]
        stats = engine.stats()
        assert (stats.num_running, stats.num_waiting) == (0, 0)
        assert stats.num_free_kv_blocks == stats.num_kv_blocks
        assert engine.abort_request("running") is None

        tokens, cached = run_to_end(engine, "next", prompt)

    clean_config = engine_config(block_size=4, num_kv_blocks=32)
    with LLMEngine(tiny_llama.model_id, tiny_llama.path, clean_config) as clean:
        expected, _ = run_to_end(clean, "reference", prompt)
    assert (tokens, cached) == (expected, 4)


def test_a_fault_is_injected_only_where_the_setting_allows(tiny_llama: ReferenceModel) -> None:
    with (
        LLMEngine(tiny_llama.model_id, tiny_llama.path, engine_config()) as engine,
        pytest.raises(InvalidRequest, match="fault_injection"),
    ):
        engine.inject_step_fault()


def test_an_armed_fault_waits_for_a_step_with_work(tiny_llama: ReferenceModel) -> None:
    config = engine_config(fault_injection=True)
    with LLMEngine(tiny_llama.model_id, tiny_llama.path, config) as engine:
        engine.inject_step_fault()
        assert engine.step() == []
        engine.add_request("r", [1, 2, 3], GREEDY)
        with pytest.raises(StepFailed):
            engine.step()
        assert run_to_end(engine, "s", [1, 2, 3])[0]


@pytest.mark.parametrize(
    ("error", "fatal"),
    [
        (RankLost("tensor-parallel rank 1 exited"), True),
        (EngineDead("rank 0 failed in the middle of a step"), True),
        (torch.AcceleratorError("CUDA error: device-side assert triggered"), True),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
        (InjectedFault("injected step fault"), False),
        (RuntimeError("probability tensor contains either inf, nan or element < 0"), False),
    ],
)
def test_only_a_lost_group_or_a_broken_device_is_fatal(error: Exception, fatal: bool) -> None:
    assert is_fatal(error) is fatal
