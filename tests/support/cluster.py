"""A simulated multi-node Ray cluster on one host: a CPU head node and GPU worker nodes."""

from __future__ import annotations

from dataclasses import dataclass

from ray._private.node import Node

from prism.redis_server import free_port

MiB = 1024 * 1024
GPU_NODES = 3
GPUS_PER_NODE = 2


def head_node_args() -> dict:
    """The head node: 4 CPUs, no GPUs, no dashboard, metrics reported every second.

    Serve's one HTTP proxy runs here; it must spread requests over every ingress replica,
    not only those that share its node.
    """
    return {
        "num_cpus": 4,
        "num_gpus": 0,
        "include_dashboard": False,
        "metrics_export_port": free_port(),
        "object_store_memory": 512 * MiB,
        "_system_config": {"metrics_report_interval_ms": 1000},
        "env_vars": {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"},
    }


def gpu_node_args() -> dict:
    """A worker node declaring GPUs (the resource only, none is real) and no CPUs."""
    return {
        "num_cpus": 0,
        "num_gpus": GPUS_PER_NODE,
        "metrics_export_port": free_port(),
        "object_store_memory": 150 * MiB,
    }


@dataclass(frozen=True)
class RayCluster:
    """The running cluster: its nodes' ids and every node's Prometheus endpoint."""

    head_node_id: str
    gpu_node_ids: tuple[str, ...]
    metrics_urls: tuple[str, ...]

    @classmethod
    def of(cls, head: Node, gpu_nodes: list[Node]) -> RayCluster:
        nodes = [head, *gpu_nodes]
        return cls(
            head_node_id=head.node_id,
            gpu_node_ids=tuple(node.node_id for node in gpu_nodes),
            metrics_urls=tuple(
                f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
                for node in nodes
            ),
        )


@dataclass(frozen=True)
class ServePorts:
    """The ports of Serve's HTTP and gRPC proxies."""

    http: int
    grpc: int
