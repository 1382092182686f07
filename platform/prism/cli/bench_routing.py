"""``prism bench routing``: one workload on one fresh deployment per routing policy."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from prism.bench.records import publish
from prism.bench.routing.workloads import WORKLOADS, RoutingWorkload
from prism.bench.serve.workload import DEFAULT_TIMEOUT_SECONDS
from prism.cli.options import AddParser, add_json_option, add_plot_option, at_least, status
from prism.config import DEFAULT_PROFILE, ROUTING_POLICIES, ByteSize, load_config


def _policy_list(text: str) -> list[str]:
    """An argparse type: comma-separated routing policies, each once."""
    policies = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in policies if name not in ROUTING_POLICIES]
    if unknown or not policies:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(ROUTING_POLICIES)}, got {text!r}"
        )
    if len(set(policies)) < len(policies):
        raise argparse.ArgumentTypeError(f"a policy is listed twice in {text!r}")
    return policies


def _byte_size(text: str) -> int:
    """An argparse type: a size such as 128MiB or 1GiB."""
    try:
        return TypeAdapter(ByteSize).validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 128MiB or 1GiB)") from None


def _positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value:g}")
    return value


def add_bench_routing(add_parser: AddParser, parents: list[argparse.ArgumentParser]) -> None:
    parser = add_parser(
        "routing",
        parents=parents,
        help="one workload on one fresh deployment per routing policy, compared",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_PROFILE,
        metavar="YAML",
        help="deployment profile; its first model is benchmarked (default: local-cpu.yaml)",
    )
    parser.add_argument(
        "--policies",
        type=_policy_list,
        default=["prefix", "pow2"],
        metavar="LIST",
        help=f"comma-separated, from {', '.join(ROUTING_POLICIES)} (default: prefix,pow2)",
    )
    workload = parser.add_argument_group("workload")
    workload.add_argument(
        "--workload", choices=WORKLOADS, default=WORKLOADS[0], help="(default: %(default)s)"
    )
    workload.add_argument(
        "--requests", type=at_least(1), default=96, metavar="N", help="(default: %(default)s)"
    )
    workload.add_argument(
        "--groups",
        type=at_least(1),
        default=12,
        metavar="N",
        help="prefix groups or conversations (default: %(default)s)",
    )
    workload.add_argument(
        "--prefix-tokens",
        type=at_least(1),
        default=512,
        metavar="N",
        help="shared system prompt, or first-turn context (default: %(default)s)",
    )
    workload.add_argument(
        "--question-tokens",
        type=at_least(1),
        default=32,
        metavar="N",
        help="each request's own tokens, or a new user turn (default: %(default)s)",
    )
    workload.add_argument(
        "--output-tokens",
        type=at_least(1),
        default=16,
        metavar="N",
        help="per request (default: %(default)s)",
    )
    workload.add_argument(
        "--seed", type=int, default=0, help="of prompts and arrivals (default: %(default)s)"
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--concurrency", type=at_least(1), default=6, metavar="N", help="(default: %(default)s)"
    )
    load.add_argument(
        "--rate",
        type=_positive_float,
        metavar="R",
        help="Poisson arrivals at R requests/s instead of a fixed concurrency",
    )
    load.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="S",
        help="a request not done within S seconds counts as an error (default: %(default)g)",
    )
    deployment = parser.add_argument_group("deployment")
    deployment.add_argument(
        "--replicas", type=at_least(1), default=3, metavar="N", help="(default: %(default)s)"
    )
    deployment.add_argument(
        "--kv-cache",
        type=_byte_size,
        default="128MiB",
        metavar="SIZE",
        help="KV cache per replica (default: %(default)s, 182 blocks of SmolLM2 fp32 KV: room "
        "for the prefixes one replica serves under prefix routing, 4 of the 12 default groups "
        "and the requests in flight, but not for all 12)",
    )
    deployment.add_argument(
        "--num-cpus",
        type=_positive_float,
        metavar="N",
        help="CPUs Ray reserves per replica (default: 2 / replicas)",
    )
    deployment.add_argument(
        "--ingress-replicas",
        type=at_least(1),
        default=1,
        metavar="N",
        help="each routes on its own (default: %(default)s)",
    )
    add_json_option(parser, "routing")
    add_plot_option(parser)
    parser.set_defaults(run=_run_bench_routing)


def _run_bench_routing(args: argparse.Namespace) -> int:
    from prism.bench.progress import RequestProgress
    from prism.bench.routing.bench import run_routing_bench
    from prism.bench.routing.load import LoadShape
    from prism.bench.routing.plot import write_routing_plot
    from prism.bench.routing.report import format_routing_report, write_routing_json
    from prism.bench.routing.results import RoutingDeployment

    workload = RoutingWorkload(
        name=args.workload,
        requests=args.requests,
        groups=args.groups,
        prefix_tokens=args.prefix_tokens,
        question_tokens=args.question_tokens,
        output_tokens=args.output_tokens,
        seed=args.seed,
    )
    deployment = RoutingDeployment(
        replicas=args.replicas,
        kv_cache_bytes=args.kv_cache,
        num_cpus=args.num_cpus or 2 / args.replicas,
        ingress_replicas=args.ingress_replicas,
    )
    load = LoadShape(args.concurrency, args.rate, args.timeout, args.seed)
    with RequestProgress(args.requests * len(args.policies)) as bar:
        result = run_routing_bench(
            load_config(args.config),
            deployment,
            args.policies,
            workload,
            load,
            progress=bar.message,
            on_request_done=bar.request_done,
        )
    publish(
        format_routing_report(result),
        lambda path: write_routing_json(result, path),
        args.json,
        "routing",
        status,
        lambda path: write_routing_plot(result, path),
        args.plot,
    )
    return 0
