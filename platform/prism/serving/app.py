"""Turns one platform config into a Ray Serve application."""

from __future__ import annotations

import re
import warnings
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import AutoscalingConfig, AutoscalingPolicy, RequestRouterConfig, gRPCOptions

from prism.config import (
    AutoscalingSettings,
    GRPCSettings,
    ModelSettings,
    PlatformConfig,
    parse_config,
)
from prism.serving.grpc_service import GRPC_SERVICERS
from prism.serving.ingress import Ingress
from prism.serving.llm_server import LLMServer
from prism.serving.rank_actors import rank_bundle

APP_NAME = "prism"
INGRESS_MAX_ONGOING_REQUESTS = 4096
GRACEFUL_SHUTDOWN_TIMEOUT_S = 60.0
AUTOSCALING_POLICY = "prism.autoscaling.policy:PrismAutoscalingPolicy"
METRICS_PUSH_INTERVAL_ENV = "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S"
REPLICA_LATENCY_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}
"""Every replica runs Prism's code, and its handles' routers, on Serve's own event loop.

Serve's defaults give each its own loop in another thread, so every call and every streamed
chunk crosses threads, which costs milliseconds on a busy CPU. Prism's replica code never
blocks that loop once started (the engine steps in its own thread; tokenizing and template
rendering go to worker threads), so the hops buy nothing here: measured on a 2-core CPU,
the serving path's overhead on a lone request fell by about 10 ms (docs/benchmarks.md)."""


def grpc_options(settings: GRPCSettings) -> gRPCOptions:
    """Serve's gRPC proxy options: Prism's services on ``settings.port`` (none when off)."""
    if not settings.enabled:
        return gRPCOptions()
    return gRPCOptions(port=settings.port, grpc_servicer_functions=GRPC_SERVICERS)


def deployment_name(model: ModelSettings) -> str:
    """A Serve deployment name for a model id (``LLMServer:<id>``, unsafe characters dashed)."""
    return "LLMServer:" + re.sub(r"[^\w.\-]", "-", model.id)


def _router_config(model: ModelSettings, config: PlatformConfig) -> RequestRouterConfig:
    """Serve's router for the model's handle: :class:`prism.routing.router.PrismRouter`."""
    fields: dict[str, Any] = {  # a dict: pyright misreads this Serve model's field types
        "request_router_class": "prism.routing.router.PrismRouter",
        "request_router_kwargs": {
            "model_id": model.id,
            "router": config.router.model_dump(mode="json"),
            "redis": config.redis.model_dump(mode="json"),
        },
        "request_routing_stats_period_s": config.router.stats_period_s,
    }
    return RequestRouterConfig(**fields)


def _placement(model: ModelSettings) -> dict:
    """Ray resources of a replica: one actor, or one placement group of a bundle per rank.

    A tensor-parallel replica's bundles are ``STRICT_PACK``: all on one node, never split.
    """
    actor = {"num_cpus": model.resources.num_cpus, "num_gpus": model.resources.num_gpus}
    size = model.engine.tensor_parallel_size
    if size == 1:
        return {"ray_actor_options": actor}
    return {
        "ray_actor_options": actor,
        "placement_group_bundles": [rank_bundle(model.resources)] * size,
        "placement_group_strategy": "STRICT_PACK",
    }


def _replica_options(model: ModelSettings, config: PlatformConfig) -> dict:
    options: dict = {
        "name": deployment_name(model),
        "request_router_config": _router_config(model, config),
        **_placement(model),
        # The engine itself refuses requests past its queue bound (Overloaded, HTTP 429), so
        # Serve must hand it a little more than that bound instead of queueing them itself.
        "max_ongoing_requests": model.engine.max_num_seqs + model.max_queued_requests + 16,
        "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_TIMEOUT_S,
        "health_check_period_s": 5.0,
    }
    env_vars = dict(REPLICA_LATENCY_ENV)
    if model.autoscaling is None:
        options["num_replicas"] = model.replicas
    else:
        options["autoscaling_config"] = _autoscaling_config(model.autoscaling, model.replicas)
        env_vars[METRICS_PUSH_INTERVAL_ENV] = str(model.autoscaling.metrics_push_interval_s)
    options["ray_actor_options"]["runtime_env"] = {"env_vars": env_vars}
    return options


def _autoscaling_config(scaling: AutoscalingSettings, replicas: int) -> AutoscalingConfig:
    """Serve autoscaling under :class:`prism.autoscaling.policy.PrismAutoscalingPolicy`.

    ``metrics_interval_s`` is still how often Serve's handles report their queues (the
    replicas' interval is an environment variable), although Serve marks it deprecated.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The `metrics_interval_s` field", DeprecationWarning)
        return AutoscalingConfig(
            min_replicas=scaling.min_replicas,
            initial_replicas=max(scaling.min_replicas, min(replicas, scaling.max_replicas)),
            max_replicas=scaling.max_replicas,
            target_ongoing_requests=scaling.target_ongoing_requests,
            metrics_interval_s=scaling.metrics_push_interval_s,
            look_back_period_s=scaling.look_back_s,
            upscale_delay_s=scaling.upscale_delay_s,
            downscale_delay_s=scaling.downscale_delay_s,
            policy=AutoscalingPolicy(
                policy_function=AUTOSCALING_POLICY, policy_kwargs=scaling.objectives()
            ),
        )


def build_app(config: PlatformConfig) -> Application:
    """One ``LLMServer`` deployment per model behind the ``Ingress`` replicas."""
    servers = [
        (
            model,
            serve.deployment(LLMServer)
            .options(**_replica_options(model, config))
            .bind(model, config.redis),
        )
        for model in config.models
    ]
    ingress = serve.deployment(Ingress).options(
        name="Ingress",
        num_replicas=config.http.ingress_replicas,
        ray_actor_options={
            "num_cpus": 0,
            "resources": dict(config.http.ingress_resources),
            "runtime_env": {"env_vars": REPLICA_LATENCY_ENV},
        },
        max_ongoing_requests=INGRESS_MAX_ONGOING_REQUESTS,
    )
    hash_prompts = config.router.policy == "prefix"
    return ingress.bind(servers, config.http, hash_prompts)


def platform_app(args: dict[str, Any]) -> Application:
    """Serve's application builder for Serve config files (KubeRay's ``serveConfigV2``).

    ``import_path: prism.serving.app:platform_app`` with a platform config as ``args``. The
    config's ``http`` and ``grpc`` ports are only read by ``prism serve``: under a Serve
    config, its ``http_options`` and ``grpc_options`` say where the proxies listen.
    """
    return build_app(parse_config(args, "serve config args"))
