"""The ``Ingress`` deployment: the OpenAI-compatible HTTP API in front of the model replicas.

Requests are validated, chat-templated and tokenized here; the replicas receive token ids.
"""

# No `from __future__ import annotations`: FastAPI must see the body models' real types
# through Serve's ingress wrapper.
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException

from prism.config import HTTPSettings, ModelSettings
from prism.errors import ModelNotFound, PrismError
from prism.serving.admission import Admission
from prism.serving.auth import APIKeys
from prism.serving.errors import APIError, to_api_error
from prism.serving.grpc_service import GenerationRPCs
from prism.serving.headers import SESSION_HEADER
from prism.serving.http_middleware import APIMiddleware
from prism.serving.model_health import ModelMonitor, health_report
from prism.serving.protocol import ChatCompletionRequest, CompletionRequest, invalid_fields
from prism.serving.responses import ResponseBuilder, streaming_response, whole_response_headers
from prism.serving.served_model import ServedModel

logger = logging.getLogger(__name__)

app = FastAPI(title="Prism", description="OpenAI-compatible API of the Prism LLM platform")
app.add_middleware(APIMiddleware)


def _error_response(
    request: Request, error: APIError, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    request.state.error_type = error.type
    headers = {**error.headers(), **(headers or {})}
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


@app.exception_handler(RequestValidationError)
async def _invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
    return _error_response(request, to_api_error(invalid_fields(error.errors())))


@app.exception_handler(HTTPException)
async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    error_body = APIError(error.status_code, str(error.detail), kind)
    return _error_response(request, error_body, error.headers)  # e.g. a 405's Allow


@app.exception_handler(PrismError)
async def _prism_error(request: Request, error: PrismError) -> JSONResponse:
    return _error_response(request, to_api_error(error))


@app.exception_handler(Exception)
async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    """Anything else is a bug: a 500 without details (Starlette logs the traceback)."""
    return _error_response(request, to_api_error(error))


def read_api_key(settings: HTTPSettings) -> str | None:
    """The API key from the configured file, else the configured environment variable."""
    if settings.api_key_file is not None:
        return Path(settings.api_key_file).read_text(encoding="utf-8").strip() or None
    return os.environ.get(settings.api_key_env) or None


def read_api_keys(settings: HTTPSettings) -> APIKeys:
    """Every key the API accepts: the single key (tenant ``default``) and the keys file's."""
    return APIKeys.of(
        read_api_key(settings), settings.api_keys_file, settings.max_concurrent_requests_per_key
    )


@serve.ingress(app)
class Ingress(GenerationRPCs):
    """Serves ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` and ``/health``
    over HTTP, and the gRPC API (:class:`GenerationRPCs`)."""

    def __init__(
        self,
        models: list[tuple[ModelSettings, DeploymentHandle]],
        http: HTTPSettings,
        hash_prompts: bool,
    ) -> None:
        created = int(time.time())
        self.models = {
            model.id: ServedModel.load(model, handle, created, hash_prompts)
            for model, handle in models
        }
        for served in self.models.values():
            served.prepare()
        self.model_health = ModelMonitor({m.id: m.handle for m in self.models.values()})
        self.model_health.start()
        api_keys = read_api_keys(http)
        self.admission = Admission(api_keys, http.max_request_bytes)
        self.sse_ping_interval_s = http.sse_ping_interval_s
        app.state.admission = self.admission
        logger.info(
            "ingress ready: models %s, API keys %s",
            ", ".join(self.models),
            f"required ({len(api_keys)})" if api_keys else "off",
        )

    def _model(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFound(f"the model {name!r} does not exist") from None

    @app.get("/health")
    async def health(self) -> JSONResponse:
        """Each model's live replicas; 200 while any model is available, else 503."""
        models = await self.model_health.current()
        status_code, body = health_report(list(models.values()))
        return JSONResponse(body, status_code=status_code)

    @app.get("/v1/models")
    async def list_models(self) -> JSONResponse:
        data = [
            {"id": model.id, "object": "model", "created": model.created, "owned_by": "prism"}
            for model in self.models.values()
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/completions")
    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        model = self._model(body.model)
        prompts = await model.tokenize(body.prompts())
        params = body.sampling_params(body.max_tokens, body.logprobs)
        choices = await model.start(
            prompts,
            params,
            body.n,
            body.cache_salt,
            request.headers.get(SESSION_HEADER),
            request.state.tenant,
        )
        response = ResponseBuilder(
            "cmpl", model.id, model.tokenizer, body.include_usage, body.logprobs is not None
        )
        if body.stream:
            return streaming_response(
                response.completion_events(choices), choices, self.sse_ping_interval_s
            )
        result = await response.completion_body(choices)
        return JSONResponse(result, headers=whole_response_headers(choices))

    @app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Any:
        model = self._model(body.model)
        prompt = await model.render_chat(body.chat_messages(), body.offered_tools)
        params = body.sampling_params(body.output_limit, body.logprobs_count)
        choices = await model.start(
            [prompt],
            params,
            body.n,
            body.cache_salt,
            request.headers.get(SESSION_HEADER),
            request.state.tenant,
        )
        response = ResponseBuilder(
            "chatcmpl",
            model.id,
            model.tokenizer,
            body.include_usage,
            body.logprobs,
            body.tool_calling,
        )
        if body.stream:
            return streaming_response(
                response.chat_events(choices), choices, self.sse_ping_interval_s
            )
        result = await response.chat_body(choices)
        return JSONResponse(result, headers=whole_response_headers(choices))
