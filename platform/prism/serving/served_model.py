"""A model as the ingress knows it: its replicas' handle, its tokenizer, and starting calls."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, cast

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from prism.config import ModelSettings
from prism.errors import InvalidRequest
from prism.model_limits import check_context, check_token_ids
from prism.models import ModelConfig, apply_chat_template, load_tokenizer, resolve_model
from prism.routing.hint import RoutingHint
from prism.routing.metrics import router_metrics
from prism.sampling_params import SamplingParams
from prism.serving.auth import Tenant
from prism.serving.fanout import Choice, ChunkStream, start_choices
from prism.serving.messages import GenerateRequest
from prism.serving.tools import Tool, template_inputs


def context_length(settings: ModelSettings, config: ModelConfig) -> int:
    """The longest context the model's replicas may allow: the configured or trained one
    (a replica may allow less: its KV cache can hold less)."""
    return settings.engine.max_model_len or config.max_position_embeddings


def tenant_cache_salt(tenant: Tenant | None, cache_salt: str | None) -> str | None:
    """The engine's cache salt for a tenant's request: each tenant's cached prefixes are its
    own (tenant names hold no NUL, so no two pairs give the same salt)."""
    if tenant is None:
        return cache_salt
    return tenant.name if cache_salt is None else f"{tenant.name}\x00{cache_salt}"


@dataclass
class ServedModel:
    """One served model; ``hash_prompts`` is set when the router reads prompts' block hashes.

    ``max_model_len`` bounds prompt plus output, and ``vocab_size`` the token ids of a
    prompt, both checked here before a call is routed.
    """

    id: str
    handle: DeploymentHandle
    tokenizer: Any
    created: int
    block_size: int
    hash_prompts: bool
    max_model_len: int
    vocab_size: int

    @classmethod
    def load(
        cls, settings: ModelSettings, handle: DeploymentHandle, created: int, hash_prompts: bool
    ) -> ServedModel:
        """Read the model's tokenizer and config from its source."""
        path = resolve_model(settings.source).path
        config = ModelConfig.from_folder(path)
        return cls(
            settings.id,
            handle,
            load_tokenizer(path),
            created,
            settings.engine.block_size,
            hash_prompts,
            context_length(settings, config),
            config.vocab_size,
        )

    def prepare(self) -> None:
        """Do now what the first call would otherwise pay for.

        The handle's router starts and learns the replicas (a handle is otherwise set up by
        its first call, which then waits for Serve's replica list: about 200 ms measured on a
        2-core CPU), and the chat template is compiled (about 10 ms there).
        """
        self.handle.options(method_name="generate")
        if self.tokenizer.chat_template:
            with contextlib.suppress(InvalidRequest):
                apply_chat_template(self.tokenizer, [{"role": "user", "content": "warm up"}])

    async def tokenize(self, prompts: list[str | list[int]]) -> list[list[int]]:
        """Each prompt's token ids, tokenized off the event loop (other calls keep going)."""
        return await asyncio.to_thread(lambda: [self._token_ids(prompt) for prompt in prompts])

    async def render_chat(
        self, messages: list[dict[str, Any]], tools: list[Tool] | None = None
    ) -> list[int]:
        """The chat template's token ids for ``messages`` offering ``tools``, rendered off
        the event loop (see :mod:`prism.serving.tools` for templates that know no tools)."""
        rendered, offered = template_inputs(self.tokenizer.chat_template, messages, tools)
        return await asyncio.to_thread(apply_chat_template, self.tokenizer, rendered, offered)

    def _token_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidRequest("prompt must not be empty", "prompt")
            return list(self.tokenizer.encode(prompt))
        check_token_ids(prompt, self.vocab_size)
        return list(prompt)

    def check_context(self, prompt: list[int], max_tokens: int | None) -> None:
        """Refuse a prompt (plus ``max_tokens``) over the context, as a replica would."""
        check_context(len(prompt), max_tokens, self.max_model_len)

    def send(self, request: GenerateRequest) -> ChunkStream:
        """Start one engine request on a replica the router picks, streaming its chunks."""
        stream = self.handle.generate.options(stream=True).remote(request)
        return cast(DeploymentResponseGenerator, stream)  # stream=True: a generator

    async def start(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        n: int = 1,
        cache_salt: str | None = None,
        session_id: str | None = None,
        tenant: Tenant | None = None,
    ) -> list[Choice]:
        """Check, route and start every choice; record how well the router predicted hits.

        The cache salt the engine and the router see is the tenant's (see
        :func:`tenant_cache_salt`), so no tenant's cache hits reveal another's prompts.
        """
        for prompt in prompts:
            self.check_context(prompt, params.max_tokens)
        salt = tenant_cache_salt(tenant, cache_salt)

        def routing(prompt: list[int]) -> RoutingHint:
            if not self.hash_prompts:
                return RoutingHint([], len(prompt), self.block_size, session_id)
            return RoutingHint.for_prompt(prompt, self.id, self.block_size, salt, session_id)

        choices = await start_choices(self.send, prompts, params, n, salt, routing)
        for choice in choices:
            predicted = choice.routing.predicted_cached_tokens if choice.routing else None
            if predicted is not None and choice.first is not None:
                actual = choice.first.output.num_cached_tokens
                router_metrics().record_cached(self.id, predicted, actual)
        return choices
