"""The ``Ingress`` deployment: the OpenAI-compatible HTTP API in front of the model replicas.

Requests are validated, chat-templated and tokenized here; the replicas receive token ids.
"""

# No `from __future__ import annotations`: FastAPI must see the body models' real types
# through Serve's ingress wrapper.
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException

from prism.config import HTTPSettings, ModelSettings
from prism.engine import SamplingParams
from prism.errors import InvalidRequest, ModelNotFound, PrismError
from prism.models import apply_chat_template, load_tokenizer, resolve_model
from prism.routing.hint import RoutingHint
from prism.routing.metrics import router_metrics
from prism.serving.errors import APIError, to_api_error
from prism.serving.fanout import Choice, start_choices
from prism.serving.headers import SESSION_HEADER
from prism.serving.http_middleware import APIMiddleware
from prism.serving.protocol import ChatCompletionRequest, CompletionRequest
from prism.serving.responses import ResponseBuilder, routing_headers, streaming_response

logger = logging.getLogger(__name__)

app = FastAPI(title="Prism", description="OpenAI-compatible API of the Prism LLM platform")
app.add_middleware(APIMiddleware)


def _error_response(request: Request, error: APIError) -> JSONResponse:
    request.state.error_type = error.type
    return JSONResponse(error.body(), status_code=error.status)


@app.exception_handler(RequestValidationError)
async def _invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    message = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
    param = ".".join(location) or None
    text = f"{param}: {message}" if param else message
    return _error_response(request, APIError(400, text, "invalid_request_error", None, param))


@app.exception_handler(HTTPException)
async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    return _error_response(request, APIError(error.status_code, str(error.detail), kind))


@app.exception_handler(PrismError)
async def _prism_error(request: Request, error: PrismError) -> JSONResponse:
    return _error_response(request, to_api_error(error))


@app.exception_handler(Exception)
async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    """Anything else is a bug: a 500 without details (Starlette logs the traceback)."""
    return _error_response(request, to_api_error(error))


@dataclass
class ServedModel:
    """A model as the ingress knows it: its replicas' handle and its tokenizer."""

    id: str
    handle: DeploymentHandle
    tokenizer: Any
    created: int
    block_size: int

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidRequest("prompt must not be empty", "prompt")
            return list(self.tokenizer.encode(prompt))
        return list(prompt)


def read_api_key(settings: HTTPSettings) -> str | None:
    """The API key from the configured file, else the configured environment variable."""
    if settings.api_key_file is not None:
        return Path(settings.api_key_file).read_text(encoding="utf-8").strip() or None
    return os.environ.get(settings.api_key_env) or None


@serve.ingress(app)
class Ingress:
    """Serves ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` and ``/health``."""

    def __init__(
        self, models: list[tuple[dict, DeploymentHandle]], http: dict, hash_prompts: bool
    ) -> None:
        created = int(time.time())
        self.hash_prompts = hash_prompts  # only the prefix policy reads the block hashes
        self.models: dict[str, ServedModel] = {}
        for settings, handle in models:
            model = ModelSettings.model_validate(settings)
            tokenizer = load_tokenizer(resolve_model(model.source).path)
            self.models[model.id] = ServedModel(
                model.id, handle, tokenizer, created, model.engine.block_size
            )
        app.state.api_key = read_api_key(HTTPSettings.model_validate(http))
        logger.info(
            "ingress ready: models %s, API key %s",
            ", ".join(self.models),
            "required" if app.state.api_key else "off",
        )

    def _model(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFound(f"the model {name!r} does not exist") from None

    @app.get("/health")
    async def health(self) -> JSONResponse:
        return JSONResponse({"status": "ok", "models": sorted(self.models)})

    @app.get("/v1/models")
    async def list_models(self) -> JSONResponse:
        data = [
            {"id": model.id, "object": "model", "created": model.created, "owned_by": "prism"}
            for model in self.models.values()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def _start(
        self,
        model: ServedModel,
        request: Request,
        prompts: list[list[int]],
        params: SamplingParams,
        n: int,
        cache_salt: str | None,
    ) -> list[Choice]:
        """Route and start every choice; record how well the router predicted their hits."""
        session_id = request.headers.get(SESSION_HEADER)

        def routing(prompt: list[int]) -> RoutingHint:
            if not self.hash_prompts:
                return RoutingHint([], len(prompt), model.block_size, session_id)
            return RoutingHint.for_prompt(
                prompt, model.id, model.block_size, cache_salt, session_id
            )

        choices = await start_choices(
            model.handle, request.state.request_id, prompts, params, n, cache_salt, routing
        )
        for choice in choices:
            predicted = choice.routing.predicted_cached_tokens if choice.routing else None
            if predicted is not None and choice.first is not None:
                actual = choice.first.output.num_cached_tokens
                router_metrics().record_cached(model.id, predicted, actual)
        return choices

    @app.post("/v1/completions")
    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        model = self._model(body.model)
        prompts = [model.tokenize(prompt) for prompt in body.prompts()]
        params = body.sampling_params(body.max_tokens, body.logprobs)
        choices = await self._start(model, request, prompts, params, body.n, body.cache_salt)
        response = ResponseBuilder(
            "cmpl", model.id, model.tokenizer, body.include_usage, body.logprobs is not None
        )
        if body.stream:
            return streaming_response(response.completion_events(choices), choices)
        result = await response.completion_body(choices)
        return JSONResponse(result, headers=routing_headers(choices))

    @app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Any:
        model = self._model(body.model)
        prompt = apply_chat_template(model.tokenizer, body.chat_messages())
        params = body.sampling_params(body.output_limit, body.logprobs_count)
        choices = await self._start(model, request, [prompt], params, body.n, body.cache_salt)
        response = ResponseBuilder(
            "chatcmpl", model.id, model.tokenizer, body.include_usage, body.logprobs
        )
        if body.stream:
            return streaming_response(response.chat_events(choices), choices)
        result = await response.chat_body(choices)
        return JSONResponse(result, headers=routing_headers(choices))
