"""What the ingress does with a call before a replica sees it: tokenizing off the event loop,
the context check, and each tenant's own cache namespace (over a real engine, no Ray)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from prism.config import ModelSettings
from prism.engine import AsyncEngine, LLMEngine, SamplingParams
from prism.errors import ContextTooLong, InvalidRequest
from prism.models import ModelConfig
from prism.serving.auth import Tenant
from prism.serving.fanout import run_to_end
from prism.serving.messages import GenerateRequest
from prism.serving.served_model import ServedModel, context_length, tenant_cache_salt
from support.engine_streams import InProcessReplica
from support.engines import engine_config
from support.models import ReferenceModel, random_prompts

BLOCK_SIZE = 4
CONTEXT = 64
VOCAB = 1000
GREEDY = SamplingParams(max_tokens=2, temperature=0.0)


class NoReplica:
    """A handle that fails the test if a call reaches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the call reached a replica ({name})")


class SlowTokenizer:
    """Holds its thread for a while, as a huge prompt or chat template does."""

    def encode(self, text: str) -> list[int]:
        time.sleep(0.3)
        return [1] * len(text)

    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages: list, **options: object) -> list[int]:
        time.sleep(0.3)
        return [1, 2, 3]


def served(
    tokenizer: Any = None, hash_prompts: bool = False, max_model_len: int = CONTEXT
) -> ServedModel:
    return ServedModel(
        "tiny", NoReplica(), tokenizer, 0, BLOCK_SIZE, hash_prompts, max_model_len, VOCAB
    )


@pytest.fixture
def replica(tiny_llama: ReferenceModel):
    config = engine_config(block_size=BLOCK_SIZE, num_kv_blocks=128, max_model_len=512)
    engine = AsyncEngine(LLMEngine("tiny", tiny_llama.path, config))
    yield InProcessReplica(engine, "replica-a")
    engine.shutdown()


@pytest.mark.parametrize(
    ("prompt_tokens", "max_tokens", "param"),
    [(CONTEXT, 1, "prompt"), (CONTEXT + 500, None, "prompt"), (CONTEXT - 4, 5, "max_tokens")],
)
def test_a_call_over_the_context_is_refused_before_it_is_routed(
    prompt_tokens: int, max_tokens: int | None, param: str
) -> None:
    model = served()
    prompts = [[1] * 8, [1] * prompt_tokens]

    with pytest.raises(ContextTooLong) as refused:
        asyncio.run(model.start(prompts, replace(GREEDY, max_tokens=max_tokens)))

    assert refused.value.param == param
    assert f"this model's context is {CONTEXT}" in str(refused.value) or param == "max_tokens"


@pytest.mark.parametrize("token", [-1, VOCAB, 2**70])
def test_token_ids_outside_the_vocabulary_are_refused_before_they_are_hashed(token: int) -> None:
    model = served(hash_prompts=True)

    with pytest.raises(InvalidRequest) as refused:
        asyncio.run(model.tokenize([[1, 2], [5, token]]))

    assert refused.value.param == "prompt"


def test_the_context_is_the_configured_or_trained_one_whatever_the_window(
    tiny_llama: ReferenceModel,
) -> None:
    config = ModelConfig.from_folder(tiny_llama.path)  # 512 positions
    settings = ModelSettings(id="tiny")
    assert context_length(settings, config) == 512
    capped = ModelSettings.model_validate({"id": "tiny", "engine": {"max_model_len": 100}})
    assert context_length(capped, config) == 100
    windowed = replace(config, layer_windows=(128, None))
    assert context_length(settings, windowed) == 512


@pytest.mark.parametrize("chat", [False, True])
def test_tokenizing_leaves_the_event_loop_free(chat: bool) -> None:
    model = served(SlowTokenizer())

    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        if chat:
            await model.render_chat([{"role": "user", "content": "hi"}])
        else:
            await model.tokenize(["a long prompt"])
        ticker.cancel()
        return ticks

    assert asyncio.run(main()) >= 10, "other tasks stalled while the prompt was tokenized"


def test_tenant_salts_are_distinct_and_keep_the_client_salt() -> None:
    alpha, beta = Tenant("alpha"), Tenant("beta")
    salts = [
        tenant_cache_salt(tenant, salt)
        for tenant in (alpha, beta)
        for salt in (None, "", "s", "alpha")
    ]
    assert len(set(salts)) == len(salts)
    assert tenant_cache_salt(None, "s") == "s" and tenant_cache_salt(None, None) is None


def test_each_tenant_hits_only_its_own_cached_prefixes(
    replica: InProcessReplica, tiny_llama: ReferenceModel
) -> None:
    model = served(hash_prompts=True, max_model_len=512)
    model.send = replica.send  # an in-process replica instead of Serve
    [prompt] = random_prompts([41])
    alpha, beta = Tenant("alpha"), Tenant("beta")

    async def cached(tenant: Tenant) -> tuple[int, GenerateRequest]:
        [choice] = await model.start([prompt], GREEDY, tenant=tenant)
        await run_to_end([choice])
        return choice.cached_tokens, replica.requests[-1]

    async def main() -> list[tuple[int, GenerateRequest]]:
        return [await cached(tenant) for tenant in (alpha, alpha, beta, beta)]

    (first, a), (again, _), (other, b), (other_again, _) = asyncio.run(main())

    assert (first, again, other, other_again) == (0, 40, 0, 40)
    assert a.cache_salt != b.cache_salt
    assert a.routing is not None and b.routing is not None
    assert a.routing.block_hashes[0] != b.routing.block_hashes[0], "the router sees them apart"
