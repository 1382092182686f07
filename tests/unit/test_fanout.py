"""One API call's engine requests (prompts × ``n`` choices) over real engine streams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest

from prism.engine import AsyncEngine, FinishReason, LLMEngine, SamplingParams
from prism.errors import ContextTooLong
from prism.routing.hint import RoutingHint
from prism.serving.fanout import (
    Choice,
    ChunkStream,
    Send,
    cancel,
    chunks_in_arrival_order,
    predicted_cached_tokens,
    replicas,
    run_to_end,
    start_choices,
)
from prism.serving.messages import GenerateRequest
from support.engine_streams import InProcessReplica
from support.engines import engine_config
from support.models import ReferenceModel, random_prompts

BLOCK_SIZE = 4
NUM_BLOCKS = 256
CONTEXT = 128
GREEDY = SamplingParams(max_tokens=6, temperature=0.0)
FILL_CONTEXT = SamplingParams(max_tokens=None, temperature=0.0)
"""Runs for over a hundred steps unless aborted."""


@pytest.fixture
def replica(tiny_llama: ReferenceModel):
    config = engine_config(block_size=BLOCK_SIZE, num_kv_blocks=NUM_BLOCKS, max_model_len=CONTEXT)
    engine = AsyncEngine(LLMEngine(tiny_llama.model_id, tiny_llama.path, config))
    yield InProcessReplica(engine, "replica-a")
    engine.shutdown()


def no_hint(prompt: list[int]) -> RoutingHint:
    return RoutingHint([], len(prompt), BLOCK_SIZE)


async def start(
    send: Send,
    prompts: list[list[int]],
    params: SamplingParams,
    n: int = 1,
    routing: Callable[[list[int]], RoutingHint] = no_hint,
) -> list[Choice]:
    return await start_choices(send, prompts, params, n, None, routing)


async def generate(
    replica: InProcessReplica, prompt: list[int], params: SamplingParams
) -> list[int]:
    [choice] = await start(replica.send, [prompt], params)
    await run_to_end([choice])
    return choice.token_ids


def test_every_prompt_gets_n_choices_that_match_single_requests(
    replica: InProcessReplica,
) -> None:
    prompts = random_prompts([5, 13, 21])

    async def main():
        singles = [await generate(replica, p, GREEDY) for p in prompts]
        choices = await start(replica.send, prompts, GREEDY, n=2)
        await run_to_end(choices)
        return singles, choices, await replica.settle()

    singles, choices, stats = asyncio.run(main())

    assert [(choice.index, choice.prompt_index) for choice in choices] == [
        (0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)
    ]  # fmt: skip
    assert [choice.token_ids for choice in choices] == [s for s in singles for _ in range(2)]
    assert all(choice.finish_reason is FinishReason.LENGTH for choice in choices)
    sent = {request.request_id for request in replica.requests}
    assert len(sent) == len(replica.requests) == 9, "every engine request has an id of its own"
    assert replicas(choices) == "replica-a"
    assert predicted_cached_tokens(choices) is None
    assert stats.num_free_kv_blocks == NUM_BLOCKS


def test_calls_at_once_never_share_an_engine_request_id(replica: InProcessReplica) -> None:
    """Ids are made here, never taken from a client: calls running together cannot clash."""
    prompts = random_prompts([5, 9])

    async def main() -> list[list[Choice]]:
        calls = [start(replica.send, prompts, GREEDY, n=2) for _ in range(3)]
        started = await asyncio.gather(*calls)
        for choices in started:
            await run_to_end(choices)
        return started

    started = asyncio.run(main())

    assert all(choice.finish_reason is FinishReason.LENGTH for c in started for choice in c)
    assert len({request.request_id for request in replica.requests}) == 12


def test_chunks_are_merged_in_the_order_they_arrive(replica: InProcessReplica) -> None:
    long_run, short_run = random_prompts([4, CONTEXT - 8])  # 124 and 8 output tokens

    async def main() -> list[tuple[int, int]]:
        choices = await start(replica.send, [long_run, short_run], FILL_CONTEXT)
        return [
            (choice.index, chunk.output.num_output_tokens)
            async for choice, chunk in chunks_in_arrival_order(choices)
        ]

    arrivals = asyncio.run(main())

    assert [count for index, count in arrivals if index == 0] == list(range(1, 125))
    assert [count for index, count in arrivals if index == 1] == list(range(1, 9))
    assert arrivals.index((1, 8)) < arrivals.index((0, 60)), "the short choice waited"


def test_an_error_before_the_first_output_cancels_the_other_choices(
    replica: InProcessReplica,
) -> None:
    fits, too_long = random_prompts([8, CONTEXT + 40])

    async def main():
        with pytest.raises(ContextTooLong) as raised:
            await start(replica.send, [fits, too_long], FILL_CONTEXT, n=2)
        return raised.value, await replica.settle()

    error, stats = asyncio.run(main())

    assert error.param == "prompt"
    assert [request.prompt_token_ids for request in replica.requests] == [fits] * 2 + [too_long] * 2
    assert stats.num_running == 0 and stats.num_free_kv_blocks == NUM_BLOCKS


def test_cancelled_choices_are_aborted_and_free_their_blocks(replica: InProcessReplica) -> None:
    async def main():
        choices = await start(replica.send, random_prompts([6, 9]), FILL_CONTEXT, n=2)
        cancel(choices)
        return await replica.settle()

    stats = asyncio.run(main())

    assert (stats.num_running, stats.num_waiting) == (0, 0)
    assert stats.num_free_kv_blocks == NUM_BLOCKS


def test_seeded_choices_get_distinct_reproducible_seeds(replica: InProcessReplica) -> None:
    [prompt] = random_prompts([7])
    seeded = SamplingParams(max_tokens=8, temperature=1.0, seed=7)

    async def main():
        outputs = []
        for _ in range(2):
            choices = await start(replica.send, [prompt], seeded, n=3)
            await run_to_end(choices)
            outputs.append([choice.token_ids for choice in choices])
        singles = [await generate(replica, prompt, replace(seeded, seed=7 + k)) for k in range(3)]
        return outputs, singles

    (first, again), singles = asyncio.run(main())

    assert [request.params.seed for request in replica.requests[:3]] == [7, 8, 9]
    assert len({tuple(tokens) for tokens in first}) == 3
    assert first == again == singles


def test_predicted_cached_tokens_count_each_prompt_once(
    replica: InProcessReplica, tiny_llama: ReferenceModel
) -> None:
    warm, cold = random_prompts([18, 11], seed=5)

    def routing(prompt: list[int]) -> RoutingHint:
        return RoutingHint.for_prompt(prompt, tiny_llama.model_id, BLOCK_SIZE)

    def routed(cached: set[bytes]) -> Send:
        """Send as the router does: annotate the hint with the leading blocks held."""

        def send(request: GenerateRequest) -> ChunkStream:
            assert request.routing is not None
            held = 0
            for block_hash in request.routing.block_hashes:
                if block_hash not in cached:
                    break
                held += 1
            request.routing.predicted_cached_tokens = request.routing.cached_tokens(held)
            return replica.send(request)

        return send

    async def main() -> list[Choice]:
        await generate(replica, warm, GREEDY)
        cached = set(await replica.engine.cached_block_hashes())
        choices = await start(routed(cached), [warm, cold], GREEDY, n=2, routing=routing)
        await run_to_end(choices)
        return choices

    choices = asyncio.run(main())

    assert [choice.cached_tokens for choice in choices] == [16, 16, 0, 0]
    assert predicted_cached_tokens(choices) == 16  # 4 blocks of the warm prompt, once
    assert len({id(choice.routing) for choice in choices}) == 4, "a hint per engine request"
