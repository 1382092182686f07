"""``prism serve``: bring up Ray, Redis and the Serve application, and tear them down.

Start order is Ray, then the embedded Redis (bound where the replicas can reach it), then
Serve; the teardown runs backwards, so Serve's replicas stop before the index they publish
to goes away.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import ray
from ray import serve

from prism.config import (
    ConfigError,
    HTTPSettings,
    ModelSettings,
    PlatformConfig,
    grpc_exposable,
    grpc_target,
    openai_base_url,
    redact_url,
    with_password,
)
from prism.engine.parallel import check_tensor_parallel
from prism.engine.quantization_plan import QuantizationPlan
from prism.errors import IncompatibleSettings
from prism.models import ModelConfig, resolve_model
from prism.redis_server import EmbeddedRedis, random_password
from prism.serving.app import APP_NAME, REPLICA_LATENCY_ENV, build_app, grpc_options
from prism.serving.ingress import read_api_keys

logger = logging.getLogger(__name__)

GRPC_MESSAGE_SIZE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"


@dataclass(frozen=True, slots=True)
class Listener:
    """One thing the platform listens on: what it is, where, and who may use it."""

    service: str
    address: str
    access: str


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a running platform can be reached; no field holds a password."""

    openai_base_url: str
    grpc_target: str | None
    dashboard_url: str | None
    metrics_url: str
    redis_url: str
    """The index's address; the password, if any, is left out or shown as ``***``."""
    listeners: tuple[Listener, ...]
    index_url: str = field(repr=False)
    """The index's URL as the deployments got it: it may hold the password, so never print it."""
    embedded_redis: EmbeddedRedis | None
    """The Redis server ``prism serve`` started (None: the config named one)."""


@dataclass(frozen=True, slots=True)
class _RayStarted:
    dashboard_url: str | None
    joined: bool
    """True when Prism joined a running cluster rather than starting its own."""


def _start_ray(config: PlatformConfig, address: str | None, stack: ExitStack) -> _RayStarted:
    """Join ``address`` (or $RAY_ADDRESS) if given, else start a local Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address)
    else:
        # Serve's gRPC proxy reads its message size limit from the environment it inherits;
        # its proxies' handles, like the replicas, route on Serve's own event loop.
        os.environ[GRPC_MESSAGE_SIZE_ENV] = str(grpc_message_limit(config.http))
        for name, value in REPLICA_LATENCY_ENV.items():
            os.environ.setdefault(name, value)
        context = ray.init(
            address="local",  # a new instance, never a cluster found on this machine
            include_dashboard=True,
            dashboard_host=config.ray.dashboard_host,
            dashboard_port=config.ray.dashboard_port,
            _metrics_export_port=config.ray.metrics_export_port,
        )
    stack.callback(ray.shutdown)  # a joined cluster keeps running: this only disconnects
    url = context.dashboard_url
    dashboard = f"http://{url}" if url and not url.startswith("http") else url
    return _RayStarted(dashboard, joined=bool(address))


def grpc_message_limit(http: HTTPSettings) -> int:
    """The gRPC proxy's message size limit, in bytes, both ways.

    Serve applies one limit to requests and replies alike, so it is never under 4 MiB (gRPC's
    usual default) lest long replies be cut; requests over ``http.max_request_bytes`` that
    pass it are refused by the ingress with a clear message.
    """
    return max(int(http.max_request_bytes), 4 << 20)


def start_index(
    config: PlatformConfig, joined: bool, stack: ExitStack
) -> tuple[PlatformConfig, EmbeddedRedis | None]:
    """Start the embedded Redis unless the config names one; return the config to deploy.

    It always has a fresh random password. On a machine of its own it listens on loopback;
    in a joined cluster, replicas on other nodes must reach it, so it listens on this
    node's cluster address.
    """
    if config.redis.url is not None:
        return config, None
    host = ray.util.get_node_ip_address() if joined else "127.0.0.1"
    password = random_password()
    server = stack.enter_context(EmbeddedRedis(host=host, password=password))
    redis = config.redis.model_copy(update={"url": with_password(server.url, password)})
    return config.model_copy(update={"redis": redis}), server


def _start_serve(config: PlatformConfig, joined: bool, stack: ExitStack) -> None:
    serve.start(
        http_options={"host": config.http.host, "port": config.http.port},
        grpc_options=grpc_options(config.grpc),
    )
    if joined:
        stack.callback(serve.delete, APP_NAME)
    else:
        stack.callback(serve.shutdown)
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")


def check_model(model: ModelSettings) -> None:
    """Resolve a model's weights and check they fit its settings, before any replica starts."""
    resolved = resolve_model(model.source)
    try:
        quantization = QuantizationPlan.for_model(
            model.engine.quantization, model.engine.quantization_group_size, resolved.path
        )
        check_tensor_parallel(
            ModelConfig.from_folder(resolved.path),
            model.engine.tensor_parallel_size,
            quantization.group_size(model.engine.tensor_parallel_size),
        )
    except (IncompatibleSettings, ValueError) as error:
        raise ConfigError(f"model {model.id!r}: {error}") from None


def _listeners(
    config: PlatformConfig, keys_set: bool, redis: EmbeddedRedis | None
) -> tuple[Listener, ...]:
    key = "API key required" if keys_set else "open: no API key set"
    found = [Listener("OpenAI API (HTTP)", f"{config.http.host}:{config.http.port}", key)]
    if config.grpc.enabled:
        found.append(Listener("gRPC API", f"[::]:{config.grpc.port} (all interfaces)", key))
    found.append(
        Listener(
            "Ray dashboard",
            f"{config.ray.dashboard_host}:{config.ray.dashboard_port}",
            "no authentication (Ray's)",
        )
    )
    found.append(
        Listener(
            "Metrics (Prometheus)",
            f"{config.ray.metrics_export_port} on the node's address",
            "read-only, no authentication (Ray's)",
        )
    )
    if redis is not None:
        found.append(Listener("Redis (prefix index)", f"{redis.host}:{redis.port}", "password"))
    return tuple(found)


def start_platform(
    config: PlatformConfig, stack: ExitStack, ray_address: str | None = None
) -> Endpoints:
    """Start everything ``config`` asks for; ``stack`` undoes it in reverse order."""
    for model in config.models:  # convert GGUF weights once here, not in every replica
        check_model(model)
    keys_set = len(read_api_keys(config.http)) > 0  # also checks the keys file early
    if config.grpc.enabled and not grpc_exposable(config.grpc, keys_set):
        logger.warning(
            "gRPC API off: Serve's gRPC proxy listens on every interface and no API key is "
            "set; set one, or grpc.allow_unauthenticated: true to serve gRPC without it"
        )
        config = config.model_copy(
            update={"grpc": config.grpc.model_copy(update={"enabled": False})}
        )
    started = _start_ray(config, ray_address, stack)
    config, redis = start_index(config, started.joined, stack)
    _start_serve(config, started.joined, stack)
    assert config.redis.url is not None
    return Endpoints(
        openai_base_url=openai_base_url(config.http),
        grpc_target=grpc_target(config.http, config.grpc) if config.grpc.enabled else None,
        dashboard_url=started.dashboard_url,
        metrics_url=f"http://127.0.0.1:{config.ray.metrics_export_port}/metrics",
        redis_url=redis.url if redis is not None else redact_url(config.redis.url),
        listeners=_listeners(config, keys_set, redis),
        index_url=config.redis.url,
        embedded_redis=redis,
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
