"""Whole (non-streamed) OpenAI response bodies built from real engine choices."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from prism.engine import AsyncEngine, LLMEngine, RequestOutput, SamplingParams
from prism.routing.hint import RoutingHint
from prism.serving.fanout import start_choices
from prism.serving.responses import ResponseBuilder
from support.engine_streams import InProcessReplica
from support.engines import engine_config
from support.models import ReferenceModel, random_prompts

BLOCK_SIZE = 4
GREEDY = SamplingParams(max_tokens=5, temperature=0.0)


def approx(expected: object) -> object:
    """Log-probabilities agree up to float noise (a cached prefix is not recomputed)."""
    return pytest.approx(expected, abs=1e-4)


@pytest.fixture(scope="module")
def replica(tiny_llama: ReferenceModel, smollm2_tokenizer: Any):
    """The tiny model with a real tokenizer, so outputs carry text."""
    config = engine_config(block_size=BLOCK_SIZE, num_kv_blocks=128)
    engine = LLMEngine(tiny_llama.model_id, tiny_llama.path, config, smollm2_tokenizer)
    front = AsyncEngine(engine)
    yield InProcessReplica(front, "replica-a")
    front.shutdown()


def no_hint(prompt: list[int]) -> RoutingHint:
    return RoutingHint([], len(prompt), BLOCK_SIZE)


def direct(replica: InProcessReplica, prompt: list[int], params: SamplingParams):
    """The request's outputs straight from the engine."""

    async def main() -> list[RequestOutput]:
        return [output async for output in replica.engine.generate(prompt, params)]

    return asyncio.run(main())


@dataclass(frozen=True)
class Sampled:
    """A sampled token as text, its log-probability and the top alternatives'."""

    token: str
    logprob: float
    top: list[tuple[str, float]]


def engine_logprobs(
    replica: InProcessReplica, prompt: list[int], params: SamplingParams
) -> list[Sampled]:
    """The log-probabilities the engine itself reports for the request."""
    decode = replica.engine.engine.tokenizer.decode
    return [
        Sampled(decode([item.token_id]), item.logprob, [(decode([t]), lp) for t, lp in item.top])
        for output in direct(replica, prompt, params)
        for item in output.logprobs or []
    ]


def completion(
    replica: InProcessReplica,
    prompts: list[list[int]],
    params: SamplingParams,
    n: int = 1,
    logprobs: bool = False,
) -> dict:
    builder = ResponseBuilder("cmpl", "tiny", replica.engine.engine.tokenizer, False, logprobs)

    async def main() -> dict:
        choices = await start_choices(replica.send, prompts, params, n, None, no_hint)
        return await builder.completion_body(choices)

    return asyncio.run(main())


def chat(replica: InProcessReplica, prompt: list[int], params: SamplingParams, n: int = 1):
    builder = ResponseBuilder("chatcmpl", "tiny", replica.engine.engine.tokenizer, False, True)

    async def main() -> dict:
        choices = await start_choices(replica.send, [prompt], params, n, None, no_hint)
        return await builder.chat_body(choices)

    return asyncio.run(main())


def test_completion_body_holds_every_choice_and_counts_each_prompt_once(
    replica: InProcessReplica,
) -> None:
    warm, cold = random_prompts([18, 9], seed=11)
    texts = ["".join(o.new_text for o in direct(replica, p, GREEDY)) for p in (warm, cold)]

    body = completion(replica, [warm, cold], GREEDY, n=2)

    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert body["id"].startswith("cmpl-")
    assert [choice["index"] for choice in body["choices"]] == [0, 1, 2, 3]
    assert [choice["text"] for choice in body["choices"]] == [texts[0]] * 2 + [texts[1]] * 2
    assert {choice["finish_reason"] for choice in body["choices"]} == {"length"}
    assert {choice["logprobs"] for choice in body["choices"]} == {None}
    assert body["usage"] == {
        "prompt_tokens": 18 + 9,
        "completion_tokens": 4 * 5,
        "total_tokens": 18 + 9 + 20,
        "prompt_tokens_details": {"cached_tokens": 16 + 8},  # each prompt's blocks once
    }


def test_a_stop_token_ends_a_chat_choice_with_stop(replica: InProcessReplica) -> None:
    [prompt] = random_prompts([12], seed=12)
    first_token = direct(replica, prompt, GREEDY)[0].new_token_ids[0]
    params = SamplingParams(temperature=0.0, stop_token_ids=[first_token])

    stopped = chat(replica, prompt, params)

    assert stopped["object"] == "chat.completion" and stopped["id"].startswith("chatcmpl-")
    [choice] = stopped["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    assert stopped["usage"]["completion_tokens"] == 1


def test_completion_logprobs_name_each_token_and_its_offset(replica: InProcessReplica) -> None:
    [prompt] = random_prompts([10], seed=13)
    params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=2)
    expected = engine_logprobs(replica, prompt, params)

    logprobs = completion(replica, [prompt], params, logprobs=True)["choices"][0]["logprobs"]

    tokens = [sampled.token for sampled in expected]
    assert logprobs["tokens"] == tokens and len(tokens) == 6
    assert logprobs["token_logprobs"] == approx([sampled.logprob for sampled in expected])
    assert [approx(dict(sampled.top)) for sampled in expected] == logprobs["top_logprobs"]
    assert logprobs["text_offset"] == [sum(len(token) for token in tokens[:i]) for i in range(6)]


def test_chat_logprobs_carry_token_bytes_and_top_alternatives(replica: InProcessReplica) -> None:
    [prompt] = random_prompts([10], seed=14)
    params = SamplingParams(max_tokens=4, temperature=0.0, logprobs=3)
    expected = engine_logprobs(replica, prompt, params)

    body = chat(replica, prompt, params, n=2)

    for choice in body["choices"]:
        content = choice["logprobs"]["content"]
        assert [item["token"] for item in content] == [sampled.token for sampled in expected]
        assert [item["logprob"] for item in content] == approx([s.logprob for s in expected])
        assert [item["bytes"] for item in content] == [list(s.token.encode()) for s in expected]
        for item, sampled in zip(content, expected, strict=True):
            assert [top["token"] for top in item["top_logprobs"]] == [t for t, _ in sampled.top]
            assert [top["logprob"] for top in item["top_logprobs"]] == approx(
                [logprob for _, logprob in sampled.top]
            )
            assert len(sampled.top) == 3
