"""``prism serve``: bring up Ray, Redis and the Serve application, and tear them down."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import ray
from ray import serve

from prism.config import (
    ConfigError,
    ModelSettings,
    PlatformConfig,
    grpc_target,
    openai_base_url,
)
from prism.engine.parallel import check_tensor_parallel
from prism.errors import IncompatibleSettings
from prism.models import ModelConfig, resolve_model
from prism.redis_server import EmbeddedRedis
from prism.serving.app import APP_NAME, build_app, grpc_options

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a running platform can be reached."""

    openai_base_url: str
    grpc_target: str | None
    dashboard_url: str | None
    metrics_url: str
    redis_url: str


def _start_ray(config: PlatformConfig, address: str | None, stack: ExitStack) -> str | None:
    """Join ``address`` (or $RAY_ADDRESS) if given, else start a local Ray; return the dashboard."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address)
        stack.callback(ray.shutdown)  # disconnects; a joined cluster keeps running
        stack.callback(serve.delete, APP_NAME)
    else:
        context = ray.init(
            address="local",  # a new instance, never a cluster found on this machine
            include_dashboard=True,
            dashboard_host=config.ray.dashboard_host,
            dashboard_port=config.ray.dashboard_port,
            _metrics_export_port=config.ray.metrics_export_port,
        )
        stack.callback(ray.shutdown)
        stack.callback(serve.shutdown)
    url = context.dashboard_url
    return f"http://{url}" if url and not url.startswith("http") else url


def check_model(model: ModelSettings) -> None:
    """Resolve a model's weights and check they fit its settings, before any replica starts."""
    resolved = resolve_model(model.source)
    try:
        check_tensor_parallel(
            ModelConfig.from_folder(resolved.path), model.engine.tensor_parallel_size
        )
    except IncompatibleSettings as error:
        raise ConfigError(f"model {model.id!r}: {error}") from None


def start_platform(
    config: PlatformConfig, stack: ExitStack, ray_address: str | None = None
) -> Endpoints:
    """Start everything ``config`` asks for; ``stack`` undoes it in reverse order."""
    for model in config.models:  # convert GGUF weights once here, not in every replica
        check_model(model)
    redis_url = config.redis.url
    if redis_url is None:
        redis_url = stack.enter_context(EmbeddedRedis()).url
        config = config.model_copy(
            update={"redis": config.redis.model_copy(update={"url": redis_url})}
        )
    dashboard = _start_ray(config, ray_address, stack)
    serve.start(
        http_options={"host": config.http.host, "port": config.http.port},
        grpc_options=grpc_options(config.grpc),
    )
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    return Endpoints(
        openai_base_url=openai_base_url(config.http),
        grpc_target=grpc_target(config.http, config.grpc) if config.grpc.enabled else None,
        dashboard_url=dashboard,
        metrics_url=f"http://127.0.0.1:{config.ray.metrics_export_port}/metrics",
        redis_url=redis_url,
    )


def serve_until_stopped(
    config: PlatformConfig, announce: Callable[[Endpoints], None], ray_address: str | None = None
) -> None:
    """Run the platform until Ctrl-C or SIGTERM, then shut it all down cleanly.

    The signal handlers go in after ``ray.init``, which installs its own SIGTERM handler;
    SIGINT is handled explicitly too, since a server started in the background may inherit
    it ignored.
    """
    stop = threading.Event()
    with ExitStack() as stack:
        endpoints = start_platform(config, stack, ray_address)
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, lambda *_: stop.set())
            stack.callback(signal.signal, signum, previous)
        announce(endpoints)
        stop.wait()
        logger.info("shutting down")
