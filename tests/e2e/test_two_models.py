"""Gemma 3 270M beside SmolLM2: from ``prism generate``, and both served at once by the shared
``prism serve`` (the two-model profile), each request answered by the model it names."""

from __future__ import annotations

import openai
import pytest

from prism.client import PrismClient
from prism.models import DEFAULT_MODEL_ID
from support.prism_process import ServedPlatform, run_prism

pytestmark = pytest.mark.slow

GEMMA = "gemma3-270m"
QUESTION = "What is the capital of France?"
MAX_TOKENS = 8  # the pretrained Gemma runs on to max_tokens: "The capital of France is Paris."


def test_generate_answers_with_gemma() -> None:
    result = run_prism("generate", QUESTION, "--model", GEMMA, "--max-tokens", str(MAX_TOKENS))

    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.fixture(scope="module")
def client(served_platform: ServedPlatform) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served_platform.base_url}/v1", api_key="unused")


def test_both_models_are_listed_the_default_first(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [DEFAULT_MODEL_ID, GEMMA]


def test_each_model_answers_from_a_replica_of_its_own(client: openai.OpenAI) -> None:
    replicas = {}
    for model in (DEFAULT_MODEL_ID, GEMMA):
        response = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=MAX_TOKENS,
            temperature=0,
        )
        answer = response.parse()
        assert answer.model == model
        assert "Paris" in (answer.choices[0].message.content or "")
        replicas[model] = response.headers["x-prism-replica"]

    assert replicas[DEFAULT_MODEL_ID] != replicas[GEMMA]


def test_gemma_answers_over_grpc(served_platform: ServedPlatform) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    with PrismClient(served_platform.grpc_target, timeout=60) as grpc_client:
        listed = [model.id for model in grpc_client.list_models()]
        replies = grpc_client.chat(GEMMA, messages, temperature=0, max_tokens=MAX_TOKENS)
        answer = "".join(reply.text for reply in replies)

    assert listed == [DEFAULT_MODEL_ID, GEMMA]
    assert "Paris" in answer
