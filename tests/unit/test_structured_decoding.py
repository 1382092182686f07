"""Constrained decoding in the engine: grammars hold whatever the model, the batch, chunked
prefill, the prefix cache or preemption do, and they mix with the other sampling settings.

The model is a tiny random Llama with SmolLM2's tokenizer: its output is noise, so only the
grammar makes it valid.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import jsonschema
import pytest

from prism.engine import AsyncEngine, FinishReason, LLMEngine, SamplingParams
from prism.errors import InvalidRequest
from prism.models import load_tokenizer
from prism.structured_output import StructuredOutput
from support.engines import engine_config

SCHEMAS = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
            "score": {"type": "number", "minimum": -1, "maximum": 1},
        },
        "required": ["tags", "score"],
        "additionalProperties": False,
    },
]
REGEX = r"[A-Z][a-z]{2,6}-[0-9]{3}"
CHOICES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def engine(tiny_chat_model: Path) -> LLMEngine:
    config = engine_config(num_kv_blocks=128, num_threads=1)
    return LLMEngine("tiny-chat", tiny_chat_model, config, load_tokenizer(tiny_chat_model))


def prompt(engine: LLMEngine, text: str) -> list[int]:
    return list(engine.tokenizer.encode(text))


def run(engine: LLMEngine, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict:
    """Each request's text and last output, run together to the end."""
    for request_id, (prompt_ids, params) in requests.items():
        engine.add_request(request_id, prompt_ids, params)
    texts = dict.fromkeys(requests, "")
    tokens: dict[str, list[int]] = {request_id: [] for request_id in requests}
    last = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            texts[output.request_id] += output.new_text
            tokens[output.request_id] += output.new_token_ids
            last[output.request_id] = output
    return {rid: (texts[rid], tokens[rid], last[rid]) for rid in requests}


def constrained(structured: StructuredOutput, **settings: object) -> SamplingParams:
    return SamplingParams(
        **({"max_tokens": 120, "temperature": 1.0} | settings), structured=structured
    )


def test_schemas_regexes_and_choices_hold_in_a_mixed_batch(engine: LLMEngine) -> None:
    requests: dict[str, tuple[list[int], SamplingParams]] = {}
    for seed in range(4):
        for index, schema in enumerate(SCHEMAS):
            params = constrained(StructuredOutput.json_schema(schema), seed=seed)
            requests[f"json{index}-{seed}"] = (prompt(engine, f"JSON {seed}"), params)
        requests[f"regex-{seed}"] = (
            prompt(engine, "id"),
            constrained(StructuredOutput.regex(REGEX), seed=seed),
        )
        requests[f"choice-{seed}"] = (
            prompt(engine, "colour"),
            constrained(StructuredOutput.choice(CHOICES), seed=seed),
        )
        requests[f"free-{seed}"] = (
            prompt(engine, "anything"),
            SamplingParams(max_tokens=20, seed=seed),
        )

    results = run(engine, requests)

    for request_id, (text, _, last) in results.items():
        kind = request_id.split("-")[0]
        if kind.startswith("json"):
            jsonschema.validate(json.loads(text), SCHEMAS[int(kind[-1])])
        elif kind == "regex":
            assert re.fullmatch(REGEX, text), text
        elif kind == "choice":
            assert text in CHOICES
        if kind != "free":
            assert last.finish_reason is FinishReason.STOP, (request_id, text)
    assert engine.kv.pool.num_free == engine.kv.pool.num_blocks


def test_json_object_gives_an_object(engine: LLMEngine) -> None:
    params = constrained(StructuredOutput.json_object(), temperature=0.0, max_tokens=400)
    text, _, last = run(engine, {"o": (prompt(engine, "{"), params)})["o"]
    if last.finish_reason is FinishReason.STOP:
        assert isinstance(json.loads(text), dict)
    assert text.startswith("{")


def test_chunked_prefill_preemption_and_cache_hits_change_nothing(tiny_chat_model: Path) -> None:
    tokenizer = load_tokenizer(tiny_chat_model)
    roomy = LLMEngine("tiny-chat", tiny_chat_model, engine_config(num_kv_blocks=256), tokenizer)
    tight_config = engine_config(num_kv_blocks=8, max_num_batched_tokens=24, block_size=16)
    tight = LLMEngine("tiny-chat", tiny_chat_model, tight_config, tokenizer)
    shared = prompt(roomy, "a shared prefix that fills a block or two of the cache " * 2)
    requests = {
        f"r{seed}": (
            [*shared, seed + 100],
            constrained(StructuredOutput.json_schema(SCHEMAS[seed % 2]), seed=seed, max_tokens=60),
        )
        for seed in range(6)
    }

    alone = {rid: run(roomy, {rid: request})[rid][1] for rid, request in requests.items()}
    crowded = run(tight, requests)

    assert tight.stats().num_preemptions > 0
    assert tight.stats().prefix_cache_hits > 0
    assert {rid: result[1] for rid, result in crowded.items()} == alone
    assert tight.kv.pool.num_free == tight.kv.pool.num_blocks


def test_logprobs_are_those_of_the_constrained_distribution(engine: LLMEngine) -> None:
    params = constrained(StructuredOutput.choice(CHOICES), logprobs=5, seed=3)
    text, _, last = run(engine, {"c": (prompt(engine, "colour"), params)})["c"]
    assert text in CHOICES and last.logprobs
    sampled = last.logprobs[-1]
    assert math.isfinite(sampled.logprob)
    for token_id, logprob in sampled.top:  # the grammar's alternatives, or -inf
        piece = engine.tokenizer.decode([token_id])
        assert not math.isfinite(logprob) or any(piece in choice for choice in CHOICES), piece


def test_a_stop_string_ends_a_constrained_request(engine: LLMEngine) -> None:
    params = constrained(StructuredOutput.regex(REGEX), stop=["-"], seed=1)
    text, _, last = run(engine, {"s": (prompt(engine, "id"), params)})["s"]
    assert re.fullmatch(r"[A-Z][a-z]{2,6}", text), text
    assert last.finish_reason is FinishReason.STOP and last.stop_reason == "-"


def test_the_grammar_ends_a_request_that_min_tokens_or_ignore_eos_would_prolong(
    engine: LLMEngine,
) -> None:
    choice = StructuredOutput.choice(["yes"])
    results = run(
        engine,
        {
            "min": (prompt(engine, "ok?"), constrained(choice, min_tokens=10)),
            "ignore": (prompt(engine, "ok?"), constrained(choice, ignore_eos=True)),
        },
    )
    for text, _, last in results.values():
        assert text == "yes" and last.finish_reason is FinishReason.STOP


def test_max_tokens_cuts_a_constrained_request_short(engine: LLMEngine) -> None:
    params = constrained(StructuredOutput.regex("[a-z]{40}"), max_tokens=3)
    text, tokens, last = run(engine, {"m": (prompt(engine, "x"), params)})["m"]
    assert len(tokens) == 3 and last.finish_reason is FinishReason.LENGTH
    assert re.fullmatch("[a-z]+", text)


@pytest.mark.parametrize(
    ("structured", "problem"),
    [
        (StructuredOutput.regex("(unclosed"), "regex"),
        (StructuredOutput.json_schema({"type": "object", "if": {}}), "Unimplemented keys"),
        (StructuredOutput.grammar("start: missing_rule"), "missing_rule"),
    ],
)
def test_a_constraint_that_cannot_compile_is_refused(
    engine: LLMEngine, structured: StructuredOutput, problem: str
) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        engine.add_request("bad", prompt(engine, "x"), constrained(structured))
    assert not engine.has_unfinished_requests()


def test_an_engine_without_a_tokenizer_refuses_constraints(tiny_chat_model: Path) -> None:
    bare = LLMEngine("bare", tiny_chat_model, engine_config(num_kv_blocks=16))
    with pytest.raises(InvalidRequest, match="needs a tokenizer"):
        bare.add_request("r", [1, 2, 3], constrained(StructuredOutput.regex("a")))


def test_a_cached_grammar_gives_each_request_its_own_state(engine: LLMEngine) -> None:
    assert engine.grammars is not None
    structured = StructuredOutput.choice(CHOICES)
    first, second = engine.grammars.matcher(structured), engine.grammars.matcher(structured)
    assert first.consume_tokens(engine.tokenizer.encode("red"))
    assert first.is_stopped() and not second.is_stopped()


def test_the_async_engine_compiles_off_its_loop_and_refuses_bad_constraints(
    tiny_chat_model: Path,
) -> None:
    tokenizer = load_tokenizer(tiny_chat_model)
    engine = AsyncEngine(
        LLMEngine("tiny-chat", tiny_chat_model, engine_config(num_kv_blocks=32), tokenizer)
    )

    async def generate(structured: StructuredOutput) -> str:
        text = ""
        async for output in engine.generate([5, 6, 7], constrained(structured, seed=2)):
            text += output.new_text
        return text

    try:
        assert re.fullmatch(REGEX, asyncio.run(generate(StructuredOutput.regex(REGEX))))
        with pytest.raises(InvalidRequest, match="regex"):
            asyncio.run(generate(StructuredOutput.regex("[z-a]")))
    finally:
        engine.shutdown()
