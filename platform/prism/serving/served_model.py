"""A model as the ingress knows it: its replicas' handle, its tokenizer, and starting calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from prism.errors import InvalidRequest
from prism.routing.hint import RoutingHint
from prism.routing.metrics import router_metrics
from prism.sampling_params import SamplingParams
from prism.serving.fanout import Choice, ChunkStream, start_choices
from prism.serving.messages import GenerateRequest


@dataclass
class ServedModel:
    """One served model; ``hash_prompts`` is set when the router reads prompts' block hashes."""

    id: str
    handle: DeploymentHandle
    tokenizer: Any
    created: int
    block_size: int
    hash_prompts: bool

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidRequest("prompt must not be empty", "prompt")
            return list(self.tokenizer.encode(prompt))
        return list(prompt)

    def send(self, request: GenerateRequest) -> ChunkStream:
        """Start one engine request on a replica the router picks, streaming its chunks."""
        stream = self.handle.generate.options(stream=True).remote(request)
        return cast(DeploymentResponseGenerator, stream)  # stream=True: a generator

    async def start(
        self,
        request_id: str,
        prompts: list[list[int]],
        params: SamplingParams,
        n: int = 1,
        cache_salt: str | None = None,
        session_id: str | None = None,
    ) -> list[Choice]:
        """Route and start every choice; record how well the router predicted their hits."""

        def routing(prompt: list[int]) -> RoutingHint:
            if not self.hash_prompts:
                return RoutingHint([], len(prompt), self.block_size, session_id)
            return RoutingHint.for_prompt(prompt, self.id, self.block_size, cache_salt, session_id)

        choices = await start_choices(
            self.send, request_id, prompts, params, n, cache_salt, routing
        )
        for choice in choices:
            predicted = choice.routing.predicted_cached_tokens if choice.routing else None
            if predicted is not None and choice.first is not None:
                actual = choice.first.output.num_cached_tokens
                router_metrics().record_cached(self.id, predicted, actual)
        return choices
