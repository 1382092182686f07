"""Turns one platform config into a Ray Serve application."""

from __future__ import annotations

import re

from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig, gRPCOptions

from prism.config import GRPCSettings, ModelSettings, PlatformConfig
from prism.serving.grpc_service import GRPC_SERVICERS
from prism.serving.ingress import Ingress
from prism.serving.llm_server import LLMServer
from prism.serving.ranks import rank_bundle

APP_NAME = "prism"
INGRESS_MAX_ONGOING_REQUESTS = 4096
GRACEFUL_SHUTDOWN_TIMEOUT_S = 60.0


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
    return RequestRouterConfig(
        request_router_class="prism.routing.router.PrismRouter",
        request_router_kwargs={
            "model_id": model.id,
            "router": config.router.model_dump(mode="json"),
            "redis": config.redis.model_dump(mode="json"),
        },
        request_routing_stats_period_s=config.router.stats_period_s,
    )


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
    if model.autoscaling is None:
        options["num_replicas"] = model.replicas
    else:
        scaling = model.autoscaling
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "initial_replicas": max(
                scaling.min_replicas, min(model.replicas, scaling.max_replicas)
            ),
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
            "upscale_delay_s": scaling.upscale_delay_s,
            "downscale_delay_s": scaling.downscale_delay_s,
        }
    return options


def build_app(config: PlatformConfig) -> Application:
    """One ``LLMServer`` deployment per model behind the ``Ingress`` replicas."""
    redis = config.redis.model_dump(mode="json")
    servers = [
        (
            model.model_dump(mode="json"),
            serve.deployment(LLMServer)
            .options(**_replica_options(model, config))
            .bind(model.model_dump(mode="json"), redis),
        )
        for model in config.models
    ]
    ingress = serve.deployment(Ingress).options(
        name="Ingress",
        num_replicas=config.http.ingress_replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=INGRESS_MAX_ONGOING_REQUESTS,
    )
    hash_prompts = config.router.policy == "prefix"
    return ingress.bind(servers, config.http.model_dump(mode="json"), hash_prompts)
