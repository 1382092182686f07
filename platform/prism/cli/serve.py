"""``prism serve``: run the platform until Ctrl-C."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from prism.cli.engine_options import add_quantization_options, quantization_settings
from prism.cli.options import AddParser
from prism.config import DEFAULT_PROFILE, PlatformConfig, load_config

if TYPE_CHECKING:
    from prism.launcher import Endpoints


def add_serve(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "serve",
        parents=parents,
        help="run the platform: Ray, Redis, the OpenAI-compatible and gRPC APIs, until Ctrl-C",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_PROFILE,
        metavar="YAML",
        help="deployment profile (default: local-cpu.yaml, shipped in prism/deployments)",
    )
    parser.add_argument("--redis-url", help="use this Redis instead of starting an embedded one")
    parser.add_argument("--host", help="HTTP bind address (overrides the profile)")
    parser.add_argument("--port", type=int, help="HTTP port (overrides the profile)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (overrides the profile)")
    add_quantization_options(parser)
    parser.add_argument(
        "--ray-address", help="join this Ray cluster (default: $RAY_ADDRESS, else start one)"
    )
    parser.set_defaults(run=_run_serve)


def _serve_config(args: argparse.Namespace) -> PlatformConfig:
    config = load_config(args.config)
    http = {
        name: value
        for name, value in (("host", args.host), ("port", args.port))
        if value is not None
    }
    redis = {"url": args.redis_url} if args.redis_url else {}
    grpc = {"port": args.grpc_port} if args.grpc_port is not None else {}
    quantization = quantization_settings(args)
    models = [
        model.model_copy(update={"engine": model.engine.model_copy(update=quantization)})
        for model in config.models
    ]
    return config.model_copy(
        update={
            "models": models,
            "http": config.http.model_copy(update=http),
            "grpc": config.grpc.model_copy(update=grpc),
            "redis": config.redis.model_copy(update=redis),
        }
    )


def _announce(endpoints: Endpoints) -> None:
    print(f"OpenAI API:    {endpoints.openai_base_url}", flush=True)
    print(f"gRPC API:      {endpoints.grpc_target or '(off)'}", flush=True)
    print(f"Ray dashboard: {endpoints.dashboard_url or '(not running)'}", flush=True)
    print(f"Metrics:       {endpoints.metrics_url}", flush=True)
    print(f"Redis:         {endpoints.redis_url}", flush=True)
    print("Listening:", flush=True)
    width = max(len(listener.service) for listener in endpoints.listeners)
    for listener in endpoints.listeners:
        print(f"  {listener.service:<{width}}  {listener.address}  ({listener.access})", flush=True)
    print("Prism is serving. Press Ctrl-C to stop.", flush=True)


def _run_serve(args: argparse.Namespace) -> int:
    from prism.launcher import serve_until_stopped

    serve_until_stopped(_serve_config(args), _announce, args.ray_address)
    return 0
