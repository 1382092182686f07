"""Sampling settings, stop conditions and logprobs, through the engine and the sampler."""

from __future__ import annotations

import pytest
import torch

from prism.engine import FinishReason, LLMEngine, SamplingParams
from prism.engine.request import Request
from prism.engine.sampler import sample
from prism.errors import ContextTooLong, InvalidRequest
from support.engines import engine_config
from support.models import ReferenceModel, random_prompts


@pytest.fixture(scope="module")
def engine(tiny_llama: ReferenceModel) -> LLMEngine:
    return LLMEngine(tiny_llama.model_id, tiny_llama.path, engine_config(num_kv_blocks=64))


def run(engine: LLMEngine, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict:
    for request_id, (prompt, params) in requests.items():
        engine.add_request(request_id, prompt, params)
    tokens = {request_id: [] for request_id in requests}
    last = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            tokens[output.request_id].extend(output.new_token_ids)
            last[output.request_id] = output
    return {request_id: (tokens[request_id], last[request_id]) for request_id in requests}


PROMPT = random_prompts([12])[0]


def test_seeded_sampling_is_reproducible_whatever_the_batch(engine: LLMEngine) -> None:
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=42)
    alone = run(engine, {"alone": (PROMPT, params)})["alone"][0]
    crowd = {
        f"other{i}": (p, SamplingParams(max_tokens=9))
        for i, p in enumerate(random_prompts([5, 9, 30]))
    }
    together = run(engine, {"seeded": (PROMPT, params), **crowd})["seeded"][0]
    other_seed = run(engine, {"x": (PROMPT, SamplingParams(max_tokens=16, seed=7))})["x"][0]
    assert alone == together
    assert alone != other_seed


def test_top_k_one_is_greedy(engine: LLMEngine) -> None:
    greedy = run(engine, {"g": (PROMPT, SamplingParams(max_tokens=10, temperature=0.0))})
    top1 = run(engine, {"k": (PROMPT, SamplingParams(max_tokens=10, temperature=1.5, top_k=1))})
    assert greedy["g"][0] == top1["k"][0]


def test_max_tokens_ends_with_length(engine: LLMEngine) -> None:
    tokens, last = run(engine, {"r": (PROMPT, SamplingParams(max_tokens=5))})["r"]
    assert len(tokens) == 5 and last.finish_reason is FinishReason.LENGTH
    assert last.num_output_tokens == 5 and last.num_prompt_tokens == len(PROMPT)


def test_stop_token_ids_stop_unless_min_tokens_forbids(engine: LLMEngine) -> None:
    greedy = run(engine, {"g": (PROMPT, SamplingParams(max_tokens=6, temperature=0.0))})["g"][0]
    first = greedy[0]
    tokens, last = run(
        engine,
        {"s": (PROMPT, SamplingParams(max_tokens=6, temperature=0.0, stop_token_ids=[first]))},
    )["s"]
    assert tokens == [first]
    assert last.finish_reason is FinishReason.STOP and last.stop_reason == first

    tokens, _ = run(
        engine,
        {
            "m": (
                PROMPT,
                SamplingParams(max_tokens=6, min_tokens=3, temperature=0.0, stop_token_ids=[first]),
            )
        },
    )["m"]
    assert first not in tokens[:3] and len(tokens) >= 3


def test_logprobs_are_the_model_distribution(engine: LLMEngine, tiny_llama: ReferenceModel) -> None:
    params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=3)
    tokens, last = run(engine, {"l": (PROMPT, params)})["l"]
    [logprob] = last.logprobs
    with torch.inference_mode():
        logits = tiny_llama.hf(torch.tensor([PROMPT])).logits[0, -1].log_softmax(-1)
    assert logprob.token_id == tokens[0] == int(logits.argmax())
    assert logprob.logprob == pytest.approx(float(logits.max()), abs=1e-4)
    assert [token for token, _ in logprob.top] == logits.topk(3).indices.tolist()


def make_request(token_ids: list[int], params: SamplingParams, output: list[int] = ()) -> Request:
    request = Request(
        request_id="r",
        prompt_token_ids=token_ids,
        params=params,
        max_tokens=10,
        eos_token_ids=frozenset({0}),
        hash_root=b"",
        block_size=4,
        arrival_time=0.0,
        generator=torch.Generator().manual_seed(params.seed or 0),
    )
    for token in output:
        request.append_token(token)
    return request


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = torch.tensor([[2.0, -2.0, 3.0, 0.5]])
    request = make_request([0, 1], SamplingParams(temperature=0.0, repetition_penalty=4.0))
    [token] = sample(logits, [request])
    assert logits.tolist() == [[0.5, -8.0, 3.0, 0.5]] and token.token_id == 2


def test_presence_and_frequency_penalties_count_output_tokens_only() -> None:
    logits = torch.tensor([[1.0, 1.0, 1.0]])
    params = SamplingParams(temperature=0.0, presence_penalty=0.5, frequency_penalty=0.25)
    request = make_request([2, 2, 2], params, output=[1, 1])
    sample(logits, [request])
    assert logits.tolist() == [[1.0, 0.0, 1.0]]


@pytest.mark.parametrize(
    ("setting", "excluded"),
    [({"top_k": 2}, 2), ({"top_p": 0.6}, 2), ({"min_p": 0.4}, 2)],
)
def test_filters_never_sample_excluded_tokens(setting: dict, excluded: int) -> None:
    probs = torch.tensor([0.5, 0.35, 0.15])
    seen = set()
    for seed in range(300):
        request = make_request([1], SamplingParams(seed=seed, **setting))
        [token] = sample(probs.log().unsqueeze(0).clone(), [request])
        seen.add(token.token_id)
    assert excluded not in seen and seen == {0, 1}


@pytest.mark.parametrize(
    ("prompt", "params", "param"),
    [
        ([], SamplingParams(), "prompt"),
        ([999], SamplingParams(), "prompt"),
        ([1], SamplingParams(max_tokens=0), "max_tokens"),
        ([1], SamplingParams(temperature=-1.0), "temperature"),
        ([1], SamplingParams(top_p=0.0), "top_p"),
        ([1], SamplingParams(stop=["x"]), "stop"),
        ([1], SamplingParams(logprobs=99), "logprobs"),
        ([1], SamplingParams(min_tokens=5, max_tokens=2), "min_tokens"),
    ],
)
def test_bad_requests_are_refused_before_any_work(
    engine: LLMEngine, prompt: list[int], params: SamplingParams, param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        engine.add_request("bad", prompt, params)
    assert refused.value.param == param
    assert not engine.has_unfinished_requests()


def test_prompt_beyond_the_context_is_refused(engine: LLMEngine) -> None:
    with pytest.raises(ContextTooLong):
        engine.add_request("long", [1] * engine.max_model_len, SamplingParams())
    with pytest.raises(ContextTooLong) as refused:
        engine.add_request("long", [1] * 10, SamplingParams(max_tokens=engine.max_model_len))
    assert refused.value.param == "max_tokens"
