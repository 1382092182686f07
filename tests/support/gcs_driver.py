"""A Ray driver for :mod:`support.gcs_cluster`, run as its own process.

``python -m support.gcs_driver deploy ADDRESS HTTP_PORT REDIS_URL MODEL_PATH`` deploys Prism's
application (one tiny-model replica behind one ingress) from a Serve config shaped like the
chart's, with an HTTP proxy on every node; ``python -m support.gcs_driver state ADDRESS`` waits
until it is RUNNING. Both print, as their last line, one JSON object: the nodes, Serve's
proxies and the application's replicas as the GCS knows them. The test process itself never
joins the cluster, and this one never imports Prism's application (the controller does).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import cast

import ray
from ray import serve
from ray._private import state as ray_state
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from support.gcs_cluster import INGRESS_RESOURCE
from support.platforms import model_settings

APP_NAME = "prism"
MODEL_ID = "tiny-chat"
SERVE_NAMESPACE = "serve"
REPLICA_PREFIX = "SERVE_REPLICA::"
RUNNING_TIMEOUT_S = 120.0


def serve_config(http_port: int, redis_url: str, model_path: str) -> dict:
    """A Serve config of the chart's shape (its ``serveConfigV2``): Prism's application built
    by ``platform_app`` from a platform config, an HTTP proxy on every node, the ingress
    replicas on worker nodes only (as the chart places them)."""
    platform = {
        "models": [
            model_settings(
                MODEL_ID,
                model_path,
                resources={"num_cpus": 1},
                engine={"num_kv_blocks": 64, "warmup": False},
            )
        ],
        "http": {
            "port": http_port,
            "api_key_env": "PRISM_GCS_TESTS_NO_KEY",
            "ingress_resources": {INGRESS_RESOURCE: 1},
        },
        "redis": {"url": redis_url, "key_prefix": "prism-gcs-tests"},
    }
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "prism.serving.app:platform_app",
                "args": platform,
            }
        ],
    }


def deploy(config: ServeDeploySchema) -> None:
    """Start Serve and deploy ``config`` as KubeRay does, through Serve's controller."""
    serve.start(
        proxy_location=config.proxy_location,
        http_options=config.http_options.model_dump(),
    )
    client = _get_global_client()
    assert client is not None
    client.deploy_apps(config)


def wait_running(timeout: float = RUNNING_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = serve.status()
        app = status.applications.get(APP_NAME)
        proxies = set(status.proxies.values())
        if app is not None and app.status == "RUNNING" and proxies == {"HEALTHY"}:
            return
        if app is not None and app.status == "DEPLOY_FAILED":
            raise RuntimeError(f"the application failed to deploy: {app.message}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not RUNNING with healthy proxies: {status}")
        time.sleep(0.5)


def read_state() -> dict:
    status = serve.status()
    app = status.applications[APP_NAME]
    replicas = {}
    # With all_namespaces, Ray lists dicts of name and namespace.
    named = cast(list[dict[str, str]], ray.util.list_named_actors(all_namespaces=True))
    for actor in named:
        name = actor["name"]
        if actor["namespace"] != SERVE_NAMESPACE or not name.startswith(REPLICA_PREFIX):
            continue
        actor_id = ray.get_actor(name, namespace=SERVE_NAMESPACE)._actor_id.hex()
        info = ray_state.actors(actor_id=actor_id)
        replicas[name] = {
            "actor_id": actor_id,
            "node_id": info["Address"]["NodeID"],
            "pid": info["Pid"],
            "state": info["State"],
            "num_restarts": info["NumRestarts"],
        }
    nodes = {
        node["NodeID"]: {
            "alive": node["Alive"],
            "head": "node:__internal_head__" in node["Resources"],
            "node_manager_port": node["NodeManagerPort"],
        }
        for node in ray.nodes()
    }
    return {
        "nodes": nodes,
        "proxies": {node_id: proxy.value for node_id, proxy in status.proxies.items()},
        "app_status": app.status.value,
        "deployments": {name: item.status.value for name, item in app.deployments.items()},
        "replicas": replicas,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    deploy_command = commands.add_parser("deploy")
    deploy_command.add_argument("address")
    deploy_command.add_argument("http_port", type=int)
    deploy_command.add_argument("redis_url")
    deploy_command.add_argument("model_path")
    state_command = commands.add_parser("state")
    state_command.add_argument("address")
    args = parser.parse_args()
    ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False)
    if args.command == "deploy":
        config = serve_config(args.http_port, args.redis_url, args.model_path)
        deploy(ServeDeploySchema.model_validate(config))
    wait_running()
    print(json.dumps(read_state()), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
